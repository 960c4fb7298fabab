"""DataModules: CIFAR-10/100, the bundled digits, synthetic tensors and image folders."""
from c3exp.data.base import ArrayDataset, ImageArrays, ImageDataModule, build_transforms
from c3exp.data.cifar import CIFARDataModule
from c3exp.data.digits import DigitsDataModule
from c3exp.data.imagefolder import ImageFolderDataModule
from c3exp.data.synthetic import SyntheticDataModule

__all__ = [
    "ArrayDataset",
    "CIFARDataModule",
    "DigitsDataModule",
    "ImageArrays",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "build_transforms",
]
