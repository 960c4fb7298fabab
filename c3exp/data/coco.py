"""COCO detection via torchvision's CocoDetection: category ids -> labels 1..K by id; unannotated images: negatives."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import datasets
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from c3exp.data.detection import (DetectionDataModule, DetectionSamples, Target, box_fault, image_size_matches,
                                   make_target, report_dropped)
from c3exp.errors import DataNotFoundError, check, is_int, is_number

TOP_LEVEL_KEYS = ("images", "annotations", "categories")
ROUNDING_SLACK = 1.0  # COCO boxes may exceed their image by this much from rounding: clipped, not an error


def missing_coco_message(name: str, path: Path, reason: str) -> str:
    return (
        f"{name} not found: looked for {path.resolve()} ({reason}). torchvision cannot download COCO: get the 2017 "
        f"images (train2017.zip, val2017.zip) and annotations (annotations_trainval2017.zip) from "
        f"https://cocodataset.org/#download and extract them into one directory, laid out as train2017/*.jpg, "
        f"val2017/*.jpg and annotations/instances_train2017.json, annotations/instances_val2017.json; then point "
        f"data.root at that directory, e.g. `python -m c3exp task=detection data=coco2017 data.root=/datasets/coco` "
        f"(the default is data.root=data, relative to where you run, or $C3EXP_DATA; data.train_images, "
        f"data.train_annotations and the val_ and test_ ones are relative to it). For an offline run without any "
        f"download, use data=shapes_coco, which writes its own scenes with COCO JSON annotations."
    )


def load_coco(images: Path, annotations: Path) -> datasets.CocoDetection:
    """torchvision's CocoDetection, pycocotools' progress prints silenced; invalid JSON is one line with its place."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return datasets.CocoDetection(str(images), str(annotations))
    except json.JSONDecodeError as err:
        raise DataNotFoundError(f"{annotations} is not valid JSON: {err.msg} at line {err.lineno}, "
                                f"column {err.colno}") from None
    except UnicodeDecodeError:
        raise DataNotFoundError(f"{annotations} is not valid JSON: it is not UTF-8 text") from None
    except AssertionError:  # pycocotools asserts the top level is an object
        raise DataNotFoundError(f"{annotations} is not a COCO instances file: its top level is not an object with "
                                f"{', '.join(TOP_LEVEL_KEYS)}") from None


def categories_of(dataset: dict, path: Path) -> dict[int, str]:
    """The file's categories, id -> name in ascending id order; duplicates and malformed entries are errors."""
    categories: dict[int, str] = {}
    for entry in dataset["categories"]:
        if not (isinstance(entry, dict) and is_int(entry.get("id")) and isinstance(entry.get("name"), str)):
            raise DataNotFoundError(f"{path}: the category {entry!r} needs an integer id and a name")
        if entry["id"] in categories:
            raise DataNotFoundError(f"{path}: the category id {entry['id']} appears twice")
        categories[entry["id"]] = entry["name"]
    if not categories:
        raise DataNotFoundError(f"{path} has no categories: a detection file lists the object classes it uses")
    return dict(sorted(categories.items()))


class COCOSamples(DetectionSamples):
    """A CocoDetection split through wrap_dataset_for_transforms_v2, its labels made contiguous."""

    def __init__(self, coco: datasets.CocoDetection, transform: v2.Transform, label_of: dict[int, int], path: Path):
        super().__init__(transform)
        self.coco, self.label_of, self.path, self.ids, self.root = coco.coco, label_of, path, coco.ids, coco.root
        keys = {"image_id", "boxes", "labels", "iscrowd"}
        self.wrapped = datasets.wrap_dataset_for_transforms_v2(coco, target_keys=keys)

    def __len__(self) -> int:
        return len(self.wrapped)

    def raw(self, index: int) -> tuple[Image.Image, Target]:
        image, target = self.wrapped[index]
        info = self.coco.imgs[self.ids[index]]
        image_size_matches(image, info["width"], info["height"], os.path.join(self.root, info["file_name"]),
                           f"{self.path} (image id {info['id']})")
        canvas = (image.height, image.width)
        if "boxes" not in target:  # no annotations: the wrapper gives the image id alone
            return image, make_target([], [], [], target["image_id"], canvas)
        boxes = F.clamp_bounding_boxes(target["boxes"].to(torch.float32))  # the <= 1 px of rounding the check allowed
        labels = [self.label_of[category] for category in target["labels"].tolist()]
        return image, make_target(boxes, labels, target["iscrowd"], target["image_id"], canvas)


class COCODetectionDataModule(DetectionDataModule):
    """An images folder and instances JSON per split; data.num_classes = K + 1 is checked once the JSON is read."""

    def __init__(
        self,
        train_images: str = "train2017",
        train_annotations: str = "annotations/instances_train2017.json",
        val_images: str = "val2017",
        val_annotations: str = "annotations/instances_val2017.json",
        test_images: str | None = None,
        test_annotations: str | None = None,
        **settings: Any,
    ):
        super().__init__(**settings)
        self.files = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                      "test": (test_images or val_images, test_annotations or val_annotations)}
        self.categories: dict[int, str] | None = None
        self.categories_file: Path | None = None

    def open_split(self, role: str) -> COCOSamples:
        """CocoDetection over data.<role>_images and data.<role>_annotations, every annotation and image checked."""
        images, annotations = (self.root / part for part in self.files[role])
        if not annotations.is_file():
            reason = f"no such file: data.{role}_annotations={self.files[role][1]}"
            raise DataNotFoundError(missing_coco_message(self.name, annotations, reason))
        if not images.is_dir():
            reason = f"no such folder: data.{role}_images={self.files[role][0]}"
            raise DataNotFoundError(missing_coco_message(self.name, images, reason))
        coco = load_coco(images, annotations)
        label_of = self.check_annotations(coco, annotations, images)
        return COCOSamples(coco, self.transform(role == "train"), label_of, annotations)

    def check_annotations(self, coco: datasets.CocoDetection, path: Path, images: Path) -> dict[int, int]:
        """Check the file's images, categories and annotations; drop bad boxes (invalid_boxes=drop). -> label map."""
        dataset = coco.coco.dataset
        missing = [key for key in TOP_LEVEL_KEYS if not isinstance(dataset.get(key), list)]
        if missing:
            raise DataNotFoundError(f"{path} is not a COCO instances file: it lacks the top-level list"
                                    f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found keys: "
                                    f"{', '.join(sorted(dataset)) or 'none'}; expected {', '.join(TOP_LEVEL_KEYS)})")
        categories = categories_of(dataset, path)
        self.use_categories(categories, path)
        sizes = self.check_images(dataset["images"], path, images)
        kept = [entry for entry in dataset["annotations"] if self.box_is_valid(entry, categories, sizes, path)]
        dropped = len(dataset["annotations"]) - len(kept)
        if dropped:  # re-index without them: the wrapper then never sees them
            dataset["annotations"] = kept
            with contextlib.redirect_stdout(io.StringIO()):
                coco.coco.createIndex()
        report_dropped(dropped, str(path))
        return {category: label for label, category in enumerate(categories, start=1)}

    def use_categories(self, categories: dict[int, str], path: Path) -> None:
        """The first file opened sets the classes (and is checked against data.num_classes); others must agree."""
        if self.categories is None:
            count = len(categories)
            check(self.num_classes == count + 1, "data.num_classes", self.num_classes,
                  f"{count + 1}: the background and the {count} categories of {path}")
            self.categories, self.categories_file = categories, path
            self.class_names = ["background", *categories.values()]
        elif categories != self.categories:
            raise DataNotFoundError(f"{path} has the categories {categories} but {self.categories_file} has "
                                    f"{self.categories}: every split must share one category list")

    @staticmethod
    def check_images(entries: list, path: Path, folder: Path) -> dict[int, tuple[int, int]]:
        """image id -> (width, height); each entry well formed, its id unique and its file present."""
        present = set(os.listdir(folder))
        sizes: dict[int, tuple[int, int]] = {}
        for entry in entries:
            fields = isinstance(entry, dict) and is_int(entry.get("id")) and isinstance(entry.get("file_name"), str)
            if not (fields and all(is_int(entry.get(key)) and entry[key] > 0 for key in ("width", "height"))):
                raise DataNotFoundError(f"{path}: the image entry {entry!r} needs an integer id, a file_name and "
                                        f"positive integer width and height")
            if entry["id"] in sizes:
                raise DataNotFoundError(f"{path}: the image id {entry['id']} appears twice")
            name = entry["file_name"]
            if not (name in present or ("/" in name and (folder / name).is_file())):
                raise DataNotFoundError(f"{path} names the image {name!r} (id {entry['id']}) but {folder / name} "
                                        f"does not exist: fix the file or the files under data.root")
            sizes[entry["id"]] = (entry["width"], entry["height"])
        return sizes

    def box_is_valid(self, annotation: Any, categories: dict[int, str], sizes: dict[int, tuple[int, int]],
                     path: Path) -> bool:
        """Whether to keep an annotation; a malformed one, or a bad box under invalid_boxes=error, raises."""
        if not (isinstance(annotation, dict) and "id" in annotation):
            raise DataNotFoundError(f"{path}: the annotation {annotation!r} has no id")
        number = annotation["id"]
        image, category, bbox = annotation.get("image_id"), annotation.get("category_id"), annotation.get("bbox")
        if image not in sizes:
            raise DataNotFoundError(f"{path}: annotation {number} names image_id {image!r}, which is not among the "
                                    f"file's {len(sizes)} images")
        if category not in categories:
            raise DataNotFoundError(f"{path}: annotation {number} has category_id {category!r}, which is not among "
                                    f"the categories (ids {', '.join(map(str, categories))})")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            raise DataNotFoundError(f"{path}: annotation {number} has bbox {bbox!r}: expected [x, y, width, height], "
                                    f"4 numbers")
        crowd = annotation.setdefault("iscrowd", 0)
        if crowd not in (0, 1):
            raise DataNotFoundError(f"{path}: annotation {number} has iscrowd {crowd!r}: expected 0 or 1")
        x, y, w, h = bbox
        width, height = sizes[image]
        _, fault = box_fault((x, y, x + w, y + h), width, height, slack=ROUNDING_SLACK)
        if fault is None or self.invalid_boxes == "drop":
            return fault is None
        raise DataNotFoundError(
            f"{path}: annotation {number} (image id {image}) has bbox [x, y, width, height] = {bbox}, {fault}: "
            f"expected 0 <= x, 0 <= y, x + width <= {width}, y + height <= {height} (1 px more is clipped as "
            f"rounding) and a positive width and height (data.invalid_boxes=drop skips such boxes)")
