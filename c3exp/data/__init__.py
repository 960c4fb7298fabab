"""DataModules: CIFAR-10/100, the bundled digits, synthetic tensors, image folders, VOC-layout segmentation
(PASCAL VOC 2012) and object detection (PASCAL VOC XML, COCO JSON). The offline shapes scenes and their
segmentation and detection data modules are c3exp.data.shapes, which `python -m` runs as a script (so
this package does not import it)."""
from c3exp.data.base import ArrayDataset, ImageArrays, ImageDataModule, build_transforms
from c3exp.data.cifar import CIFARDataModule
from c3exp.data.coco import COCODetectionDataModule
from c3exp.data.detection import DetectionDataModule, VOCDetectionDataModule, detection_collate
from c3exp.data.digits import DigitsDataModule
from c3exp.data.imagefolder import ImageFolderDataModule
from c3exp.data.synthetic import SyntheticDataModule
from c3exp.data.voc import VOCSegmentationDataModule

__all__ = [
    "ArrayDataset",
    "CIFARDataModule",
    "COCODetectionDataModule",
    "DetectionDataModule",
    "DigitsDataModule",
    "ImageArrays",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "VOCDetectionDataModule",
    "VOCSegmentationDataModule",
    "build_transforms",
    "detection_collate",
]
