"""DataModules; the offline shapes data (c3exp.data.shapes) is not imported here: `python -m` runs it as a script."""
from c3exp.data.base import ArrayDataset, ImageArrays, ImageDataModule
from c3exp.data.cifar import CIFARDataModule
from c3exp.data.coco import COCODetectionDataModule
from c3exp.data.detection import DetectionDataModule, VOCDetectionDataModule, detection_collate
from c3exp.data.digits import DigitsDataModule
from c3exp.data.imagefolder import ImageFolderDataModule
from c3exp.data.synthetic import SyntheticDataModule
from c3exp.data.voc import VOCSegmentationDataModule

__all__ = ["ArrayDataset", "CIFARDataModule", "COCODetectionDataModule", "DetectionDataModule", "DigitsDataModule",
           "ImageArrays", "ImageDataModule", "ImageFolderDataModule", "SyntheticDataModule", "VOCDetectionDataModule",
           "VOCSegmentationDataModule", "detection_collate"]
