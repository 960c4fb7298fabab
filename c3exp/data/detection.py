"""Detection batches are `(images, targets)` lists (sizes differ): image float32 [3, H, W] in 0..1 (the detectors
normalise); target `boxes` float32 [N, 4] XYXY pixels of the transformed image, `labels` int64 [N] in 1..K,
`iscrowd` int64 [N] (VOC difficult, COCO crowd: evaluation ignores them), `image_id` int."""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from c3exp.data.splits import SplitsDataModule
from c3exp.data.voc import VOC_CLASSES, Year, check_listed, download_voc, missing_voc_message, voc_folder
from c3exp.errors import DataNotFoundError, check
from c3exp.schema import PositiveInt

log = logging.getLogger(__name__)

VOC_DETECTION_CLASSES = VOC_CLASSES[1:]  # the 20 object classes, without the background
Target = dict[str, Any]
Sample = tuple[torch.Tensor, Target]
Box = tuple[float, float, float, float]


def detection_collate(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[Target]]:
    """Samples -> (list of images, list of targets): detection images differ in size, so nothing is stacked."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_target(boxes: torch.Tensor | Sequence[Box], labels: Sequence[int] | torch.Tensor,
                iscrowd: Sequence[int] | torch.Tensor, image_id: int, canvas_size: tuple[int, int]) -> Target:
    """A target as the transforms take it: XYXY float32 BoundingBoxes on an (height, width) canvas, int64 tensors."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=canvas_size),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
        "iscrowd": torch.as_tensor(iscrowd, dtype=torch.int64).reshape(-1),
        "image_id": int(image_id),
    }


def box_fault(box: Box, width: float, height: float, slack: float = 0.0) -> tuple[Box, str | None]:
    """An XYXY box (0-based pixel edges) clipped to its image (by <= `slack` px), and why it is unusable or None."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box):
        return box, "with a coordinate that is not a finite number"
    if x0 < -slack or y0 < -slack or x1 > width + slack or y1 > height + slack:
        return box, f"outside its {width:g}x{height:g} (width x height) image"
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return clipped, "with zero or negative area"
    return clipped, None


def report_dropped(count: int, where: str) -> None:
    if count:
        log.warning(f"data.invalid_boxes=drop: dropped {count} box{'es' if count > 1 else ''} outside their image "
                    f"or without area in {where}")


class DetectionSamples(Dataset):
    """A split's (image, target) samples after the transform; subclasses read one raw sample (`raw`)."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def raw(self, index: int) -> tuple[Image.Image, Target]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        return self.transform(*self.raw(index))


def image_size_matches(image: Image.Image, width: int, height: int, image_path: str, annotation: str) -> None:
    """The annotation's boxes were checked against its stated size: the image must have that size."""
    if image.size != (width, height):
        raise DataNotFoundError(f"{image_path} is {image.width}x{image.height} (width x height) but {annotation} "
                                f"says {width}x{height}: the annotation must describe its image")


class DetectionDataModule(SplitsDataModule):
    """What VOC and COCO detection share; `headline_metric`: VOC's mAP@0.5, COCO's mAP@[.5:.95]."""

    def __init__(
        self,
        num_classes: Annotated[int, at.Ge(2), "the background and at least one object class"],
        min_size: PositiveInt | Annotated[list[PositiveInt], at.MinLen(1)],
        max_size: Annotated[PositiveInt, "the longer side's cap"],
        hflip: bool = True,
        invalid_boxes: Annotated[Literal["error", "drop"], "error: such a box stops the run, naming its file; "
                                 "drop: skipped, one warning line counts them"] = "error",
        headline_metric: Literal["map", "map_50", "map_75"] = "map_50",
        **settings: Any,
    ):
        super().__init__(**settings)
        sizes = [min_size] if isinstance(min_size, int) else list(min_size)
        self.min_size = min_size if isinstance(min_size, int) else sizes
        check(max(sizes) <= max_size, "data.min_size", self.min_size,
              f"an integer or a list of integers in 1..{max_size} (data.max_size): the shorter side after resizing")
        self.max_size, self.num_classes = max_size, num_classes
        self.hflip, self.invalid_boxes, self.headline_metric = hflip, invalid_boxes, headline_metric
        self.class_names: list[str] | None = None  # ["background", *object classes]: index = label

    def transform(self, train: bool) -> v2.Compose:
        """Shorter side to min_size (a list: one drawn per training image), longer <= max_size; boxes move along."""
        if isinstance(self.min_size, list) and train:
            resize = v2.RandomShortestSize(self.min_size, self.max_size)
        else:  # v2.Resize wants max_size > size; else the longer side decides alone
            size = max(self.min_size) if isinstance(self.min_size, list) else self.min_size
            resize = v2.Resize(size=size if size < self.max_size else None, max_size=self.max_size)
        flip = [v2.RandomHorizontalFlip()] if train and self.hflip else []
        # ToDtype(dtype) converts the image only
        return v2.Compose([v2.ToImage(), resize, *flip, v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])

    def collate_fn(self, split: str) -> Callable[[Sequence[Sample]], tuple[list[torch.Tensor], list[Target]]]:
        return detection_collate


class VOCDetectionSamples(DetectionSamples):
    """A VOCDetection split's objects as 0-based XYXY, all checked up front (`check_all`) so no sample fails later."""

    def __init__(self, voc: datasets.VOCDetection, transform: v2.Transform, class_names: Sequence[str],
                 use_difficult: bool, drop_invalid: bool):
        super().__init__(transform)
        self.voc, self.use_difficult, self.drop_invalid = voc, use_difficult, drop_invalid
        self.class_names = list(class_names)
        self.label_of = {name: label for label, name in enumerate(self.class_names, start=1)}

    def __len__(self) -> int:
        return len(self.voc)

    def raw(self, index: int) -> tuple[Image.Image, Target]:
        image, parsed = self.voc[index]  # torchvision's reading and XML parsing
        size = self._stated_size(parsed)
        if size is not None:
            image_size_matches(image, *size, self.voc.images[index], self.voc.annotations[index])
        boxes, labels, crowd, _ = self.objects(index, parsed, image.size)
        return image, make_target(boxes, labels, crowd, index, (image.height, image.width))

    def check_all(self) -> int:
        """Parse and check every annotation of the split; the number of boxes data.invalid_boxes=drop drops."""
        dropped = 0
        for index, path in enumerate(self.voc.annotations):
            try:
                parsed = datasets.VOCDetection.parse_voc_xml(ET.parse(path).getroot())
            except ET.ParseError as err:  # expat's message names the line and column
                raise DataNotFoundError(f"{path} is not valid XML: {err}") from None
            size = self._stated_size(parsed)
            if size is None:  # no <size>: the image's header says
                with Image.open(self.voc.images[index]) as image:
                    size = image.size
            dropped += self.objects(index, parsed, size)[3]
        return dropped

    def _stated_size(self, parsed: dict) -> tuple[int, int] | None:
        """(width, height) from the XML's <size>, None when absent or zero (then the image's own size counts)."""
        try:
            size = parsed["annotation"]["size"]
            width, height = int(float(size["width"])), int(float(size["height"]))
        except (KeyError, TypeError, ValueError):
            return None
        return (width, height) if width > 0 and height > 0 else None

    def objects(self, index: int, parsed: dict, size: tuple[int, int]) -> tuple[list[Box], list[int], list[int], int]:
        """(boxes, labels, iscrowd, dropped) of one parsed annotation on an image of `size` (width, height)."""
        path = self.voc.annotations[index]
        annotation = parsed.get("annotation")
        if not isinstance(annotation, dict):
            raise DataNotFoundError(f"{path} is not a VOC annotation: its root element is <{next(iter(parsed), '')}>, "
                                    f"expected <annotation>")
        objects = annotation.get("object", [])
        width, height = size
        boxes, labels, crowd, dropped = [], [], [], 0
        for number, obj in enumerate(objects if isinstance(objects, list) else [objects], start=1):
            name = obj.get("name") if isinstance(obj, dict) else None
            where = f"{path}: object {number} ({name})"
            if name not in self.label_of:
                raise DataNotFoundError(f"{path}: object {number} is named {name!r}, which is not in data.class_names "
                                        f"({', '.join(self.class_names)}): fix the annotation or data.class_names")
            difficult = obj.get("difficult", "0")
            if difficult not in ("0", "1"):
                raise DataNotFoundError(f"{where} has <difficult>{difficult}</difficult>: expected 0 or 1")
            bndbox = obj.get("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(bndbox[key]) for key in ("xmin", "ymin", "xmax", "ymax"))
            except (KeyError, TypeError, ValueError):
                raise DataNotFoundError(f"{where} has the <bndbox> {bndbox!r}: expected numbers xmin, ymin, xmax and "
                                        f"ymax") from None
            if difficult == "1" and not self.use_difficult:
                continue
            box, fault = box_fault((xmin - 1, ymin - 1, xmax, ymax), width, height)
            if fault is not None and not self.drop_invalid:
                raise DataNotFoundError(
                    f"{where} has the box xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}, {fault}: VOC "
                    f"boxes are 1-based and inclusive, 1 <= xmin <= xmax <= {width} and 1 <= ymin <= ymax <= {height} "
                    f"(data.invalid_boxes=drop skips such boxes)")
            if fault is not None:
                dropped += 1
                continue
            boxes.append(box)
            labels.append(self.label_of[name])
            crowd.append(int(difficult == "1"))
        return boxes, labels, crowd, dropped


class VOCDetectionDataModule(DetectionDataModule):
    """VOC detection under `root`/VOCdevkit/VOC<year>; difficult objects: iscrowd=1; `image_id`: the list position."""

    def __init__(
        self,
        year: Year = "2007",
        download: bool = False,
        class_names: Sequence[str] = VOC_DETECTION_CLASSES,
        train_split: str = "trainval", val_split: str = "test", test_split: str = "test",
        use_difficult: bool = True,
        **settings: Any,
    ):
        super().__init__(**settings)
        year, names, num_classes = str(year), list(class_names), self.num_classes
        check(all(names) and len(set(names)) == len(names),
              "data.class_names", class_names, "a list of distinct non-empty names, the objects' <name>s in the XML")
        check(num_classes == len(names) + 1, "data.num_classes", num_classes,
              f"{len(names) + 1}: the background and the {len(names)} data.class_names")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        lists = ["train", "trainval", "val", *(["test"] if year == "2007" else [])]  # what VOCDetection reads
        for role, split in self.splits.items():
            check(split in lists, f"data.{role}_split", split,
                  f"a list torchvision's VOCDetection reads for VOC {year}: {', '.join(lists)}")
        self.year, self.download, self.use_difficult = year, download, use_difficult
        self.object_names, self.class_names = names, ["background", *names]
        self.folder = voc_folder(self.root, self.year)

    def list_file(self, split: str) -> Path:
        return self.folder / "ImageSets" / "Main" / f"{split}.txt"

    def missing(self, reason: str) -> DataNotFoundError:
        return DataNotFoundError(missing_voc_message(self.name, self.folder, reason, self.year, "detection"))

    def prepare_data(self) -> None:
        """Download (data.download=true) the archives of the lists that are missing, once, on one process."""
        for split in dict.fromkeys(self.splits.values()) if self.download else ():  # 2007's test: its own archive
            if not self.list_file(split).is_file():
                download_voc(datasets.VOCDetection, self.root, self.year, split, self.missing)

    def open_split(self, role: str) -> VOCDetectionSamples:
        """torchvision's VOCDetection for the list data.<role>_split, every file it names and every object checked."""
        split, listing = self.splits[role], self.list_file(self.splits[role])
        if not self.folder.is_dir():
            raise self.missing("no such folder")
        if not listing.is_file():
            separate = self.year == "2007" and split == "test"
            raise self.missing(f"it has no ImageSets/Main/{split}.txt" + (
                " (VOC 2007's test set is a separate archive, VOCtest_06-Nov-2007.tar)" if separate else ""))
        voc = datasets.VOCDetection(str(self.root), self.year, split)
        check_listed(listing, (*voc.images, *voc.annotations), self.root)
        samples = VOCDetectionSamples(voc, self.transform(role == "train"), self.object_names, self.use_difficult,
                                      self.invalid_boxes == "drop")
        report_dropped(samples.check_all(), str(listing))
        return samples
