"""DataModules: CIFAR-10/100, the bundled digits, synthetic tensors, image folders, and VOC-layout segmentation
(PASCAL VOC 2012; the offline shapes scenes are c3exp.data.shapes, which `python -m` runs as a script)."""
from c3exp.data.base import ArrayDataset, ImageArrays, ImageDataModule, build_transforms
from c3exp.data.cifar import CIFARDataModule
from c3exp.data.digits import DigitsDataModule
from c3exp.data.imagefolder import ImageFolderDataModule
from c3exp.data.synthetic import SyntheticDataModule
from c3exp.data.voc import VOCSegmentationDataModule

__all__ = [
    "ArrayDataset",
    "CIFARDataModule",
    "DigitsDataModule",
    "ImageArrays",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "VOCSegmentationDataModule",
    "build_transforms",
]
