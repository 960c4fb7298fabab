"""Detection batches are `(images, targets)` lists (sizes differ): image float32 [3, H, W] in 0..1 (the detectors
normalise); target `boxes` float32 [N, 4] XYXY pixels of the transformed image, `labels` int64 [N] in 1..K,
`iscrowd` int64 [N] (VOC difficult, COCO crowd: evaluation ignores them), `image_id` int."""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import annotated_types as at
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from c3exp.data.base import SplitsDataModule
from c3exp.data.voc import VOCLayout, check_listed
from c3exp.errors import DataNotFoundError, check
from c3exp.schema import PositiveInt

log = logging.getLogger(__name__)

Target = dict[str, Any]
Sample = tuple[torch.Tensor, Target]
Box = tuple[float, float, float, float]
Object = tuple[Box, int, int]  # box, label, iscrowd


def detection_collate(batch: Sequence[Sample]) -> tuple[list[torch.Tensor], list[Target]]:
    """Samples -> (list of images, list of targets): detection images differ in size, so nothing is stacked."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_target(objects: Sequence[Object], image_id: int, canvas_size: tuple[int, int]) -> Target:
    """A target as the transforms take it: XYXY float32 BoundingBoxes on an (height, width) canvas, int64 tensors."""
    boxes = torch.tensor([box for box, _, _ in objects], dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=canvas_size),
        "labels": torch.tensor([label for _, label, _ in objects], dtype=torch.int64),
        "iscrowd": torch.tensor([crowd for _, _, crowd in objects], dtype=torch.int64),
        "image_id": image_id,
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


@dataclass
class Record:
    """One image of a split, checked up front: its file, the size `annotation` states (None: unstated), its objects."""

    path: str
    annotation: str
    size: tuple[int, int] | None
    image_id: int
    objects: list[Object] = field(default_factory=list)
    dropped: int = 0  # bad boxes skipped under data.invalid_boxes=drop


class DetectionSamples(Dataset):
    """A split's checked records (one warning counts the boxes dropped from `source`), read as torchvision's do."""

    def __init__(self, records: Sequence[Record], transform: v2.Transform, source: str):
        self.records, self.transform = list(records), transform
        dropped = sum(record.dropped for record in self.records)
        if dropped:
            log.warning(f"data.invalid_boxes=drop: dropped {dropped} box{'es' if dropped > 1 else ''} outside their "
                        f"image or without area in {source}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        with Image.open(record.path) as file:
            image = file.convert("RGB")
        if record.size not in (None, image.size):  # the boxes were checked against the stated size
            raise DataNotFoundError(f"{record.path} is {image.width}x{image.height} (width x height) but "
                                    f"{record.annotation} says {'x'.join(map(str, record.size))}: the annotation must "
                                    f"describe its image")
        return self.transform(image, make_target(record.objects, record.image_id, (image.height, image.width)))


class DetectionDataModule(SplitsDataModule):
    """What VOC and COCO detection share; `headline_metric`: VOC's mAP@0.5, COCO's mAP@[.5:.95]."""

    def __init__(
        self,
        num_classes: Annotated[int, at.Ge(2), "the background and at least one object class"],
        min_size: PositiveInt | Annotated[list[PositiveInt], at.MinLen(1)],
        max_size: Annotated[PositiveInt, "the longer side's cap"],
        hflip: bool,
        invalid_boxes: Annotated[Literal["error", "drop"], "error: such a box stops the run, naming its file; "
                                 "drop: skipped, one warning line counts them"],
        headline_metric: Literal["map", "map_50", "map_75"],
        **settings: Any,
    ):
        super().__init__(**settings)
        self.min_size = min_size if isinstance(min_size, int) else list(min_size)
        self.largest_size = min_size if isinstance(min_size, int) else max(min_size)  # what evaluation resizes to
        check(self.largest_size <= max_size, "data.min_size", self.min_size,
              f"an integer or a list of integers in 1..{max_size} (data.max_size): the shorter side after resizing")
        self.max_size, self.num_classes = max_size, num_classes
        self.hflip, self.invalid_boxes, self.headline_metric = hflip, invalid_boxes, headline_metric
        self.class_names: list[str] | None = None  # ["background", *object classes]: index = label

    def transform(self, train: bool) -> v2.Compose:
        """Shorter side to min_size (a list: one drawn per training image), longer <= max_size; boxes move along."""
        if isinstance(self.min_size, list) and train:
            resize = v2.RandomShortestSize(self.min_size, self.max_size)
        else:  # v2.Resize wants max_size > size; else the longer side decides alone
            size = self.largest_size if self.largest_size < self.max_size else None
            resize = v2.Resize(size=size, max_size=self.max_size)
        flip = [v2.RandomHorizontalFlip()] if train and self.hflip else []
        # ToDtype(dtype) converts the image only
        return v2.Compose([v2.ToImage(), resize, *flip, v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])

    def collate_fn(self, split: str) -> Callable[[Sequence[Sample]], tuple[list[torch.Tensor], list[Target]]]:
        return detection_collate


class VOCDetectionDataModule(VOCLayout, DetectionDataModule):
    """VOC detection under `root`/VOCdevkit/VOC<year>; difficult objects: iscrowd=1; `image_id`: the list position."""

    task: ClassVar[str] = "detection"
    reader: ClassVar[type[datasets.VisionDataset]] = datasets.VOCDetection
    lists: ClassVar[str] = "Main"

    def __init__(
        self,
        class_names: Annotated[Sequence[str], at.Predicate(lambda names: all(names) and len(set(names)) == len(names)),
                               "distinct non-empty names, the objects' <name>s in the XML"],
        use_difficult: bool,
        **settings: Any,
    ):
        super().__init__(**settings)
        names, num_classes, year = list(class_names), self.num_classes, self.year
        check(num_classes == len(names) + 1, "data.num_classes", num_classes,
              f"{len(names) + 1}: the background and the {len(names)} data.class_names")
        lists = ["train", "trainval", "val", *(["test"] if year == "2007" else [])]  # what VOCDetection reads
        for role, split in self.splits.items():
            check(split in lists, f"data.{role}_split", split,
                  f"a list torchvision's VOCDetection reads for VOC {year}: {', '.join(lists)}")
        self.use_difficult, self.object_names, self.class_names = use_difficult, names, ["background", *names]
        self.label_of = {name: label for label, name in enumerate(names, start=1)}

    def open_split(self, role: str) -> DetectionSamples:
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
        records = [self.record(index, *files) for index, files in enumerate(zip(voc.images, voc.annotations))]
        return DetectionSamples(records, self.transform(role == "train"), str(listing))

    def record(self, index: int, image: str, path: str) -> Record:
        """One annotation parsed and checked, its boxes 0-based XYXY."""
        try:
            parsed = datasets.VOCDetection.parse_voc_xml(ET.parse(path).getroot())
        except ET.ParseError as err:  # expat's message names the line and column
            raise DataNotFoundError(f"{path} is not valid XML: {err}") from None
        annotation = parsed.get("annotation")
        if not isinstance(annotation, dict):
            raise DataNotFoundError(f"{path} is not a VOC annotation: its root element is <{next(iter(parsed), '')}>, "
                                    f"expected <annotation>")
        try:  # <size>, unless absent or zero: then the image's header says
            width, height = (int(float(annotation["size"][key])) for key in ("width", "height"))
        except (KeyError, TypeError, ValueError):
            width = height = 0
        record = Record(image, path, (width, height) if width > 0 and height > 0 else None, index)
        if record.size is None:
            with Image.open(image) as file:
                width, height = file.size
        objects = annotation.get("object", [])
        for number, obj in enumerate(objects if isinstance(objects, list) else [objects], start=1):
            name = obj.get("name") if isinstance(obj, dict) else None
            where = f"{path}: object {number} ({name})"
            if name not in self.label_of:
                raise DataNotFoundError(f"{path}: object {number} is named {name!r}, which is not in data.class_names "
                                        f"({', '.join(self.object_names)}): fix the annotation or data.class_names")
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
            if fault is not None and self.invalid_boxes == "error":
                raise DataNotFoundError(
                    f"{where} has the box xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, ymax={ymax:g}, {fault}: VOC "
                    f"boxes are 1-based and inclusive, 1 <= xmin <= xmax <= {width} and 1 <= ymin <= ymax <= {height} "
                    f"(data.invalid_boxes=drop skips such boxes)")
            if fault is None:
                record.objects.append((box, self.label_of[name], int(difficult == "1")))
            record.dropped += fault is not None
        return record

