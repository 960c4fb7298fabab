"""COCO instances JSON in CocoDetection's image order; category ids -> labels 1..K by id; unannotated: negatives."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from c3exp.data.detection import DetectionDataModule, DetectionSamples, Record, box_fault
from c3exp.errors import DataNotFoundError, check, is_int, is_number

TOP_LEVEL_KEYS = ("images", "annotations", "categories")
ROUNDING_SLACK = 1.0  # COCO boxes may exceed their image by this much from rounding: clipped, not an error


def load_instances(path: Path) -> dict:
    """A COCO instances file; invalid JSON, or a top level without the three lists, is one line with its place."""
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataNotFoundError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except UnicodeDecodeError:
        raise DataNotFoundError(f"{path} is not valid JSON: it is not UTF-8 text") from None
    keys = dataset if isinstance(dataset, dict) else {}  # a list or a scalar at the top level has no keys
    missing = [key for key in TOP_LEVEL_KEYS if not isinstance(keys.get(key), list)]
    if missing:
        raise DataNotFoundError(f"{path} is not a COCO instances file: it lacks the top-level list"
                                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found keys: "
                                f"{', '.join(sorted(keys)) or 'none'}; expected {', '.join(TOP_LEVEL_KEYS)})")
    return dataset


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


class COCODetectionDataModule(DetectionDataModule):
    """An images folder and instances JSON per split; data.num_classes = K + 1 is checked once the JSON is read."""

    def __init__(
        self,
        train_images: str, train_annotations: str,
        val_images: str, val_annotations: str,
        test_images: str | None, test_annotations: str | None,
        **settings: Any,
    ):
        super().__init__(**settings)
        self.files = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                      "test": (test_images or val_images, test_annotations or val_annotations)}
        self.categories: dict[int, str] | None = None
        self.categories_file: Path | None = None

    def open_split(self, role: str) -> DetectionSamples:
        """data.<role>_images and data.<role>_annotations, every image and annotation checked."""
        images, annotations = (self.root / part for part in self.files[role])
        if not annotations.is_file():
            raise self.missing(annotations, f"no such file: data.{role}_annotations={self.files[role][1]}")
        if not images.is_dir():
            raise self.missing(images, f"no such folder: data.{role}_images={self.files[role][0]}")
        return DetectionSamples(self.records(annotations, images), self.transform(role == "train"), str(annotations))

    def missing(self, path: Path, reason: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"{self.name} not found: looked for {path.resolve()} ({reason}). torchvision cannot download COCO: get the "
            f"2017 images (train2017.zip, val2017.zip) and annotations (annotations_trainval2017.zip) from "
            f"https://cocodataset.org/#download and extract them into one directory, laid out as train2017/*.jpg, "
            f"val2017/*.jpg and annotations/instances_train2017.json, annotations/instances_val2017.json; then point "
            f"data.root at that directory, e.g. `python -m c3exp task=detection data=coco2017 "
            f"data.root=/datasets/coco` (the default is data.root=data, relative to where you run, or $C3EXP_DATA; "
            f"data.train_images, data.train_annotations and the val_ and test_ ones are relative to it). For an "
            f"offline run without any download, use data=shapes_coco, which writes its own scenes with COCO JSON "
            f"annotations.")

    def records(self, path: Path, folder: Path) -> list[Record]:
        """The file's images in id order with their kept boxes, every entry checked in one pass over each list."""
        dataset = load_instances(path)
        categories = categories_of(dataset, path)
        self.use_categories(categories, path)
        label_of = {category: label for label, category in enumerate(categories, start=1)}
        records = self.image_records(dataset["images"], path, folder)
        for annotation in dataset["annotations"]:
            self.add_annotation(annotation, label_of, records, path)
        return [records[number] for number in sorted(records)]  # CocoDetection's order

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
    def image_records(entries: list, path: Path, folder: Path) -> dict[int, Record]:
        """image id -> its record; each entry well formed, its id unique and its file present."""
        present, records = set(os.listdir(folder)), {}
        for entry in entries:
            fields = isinstance(entry, dict) and is_int(entry.get("id")) and isinstance(entry.get("file_name"), str)
            if not (fields and all(is_int(entry.get(key)) and entry[key] > 0 for key in ("width", "height"))):
                raise DataNotFoundError(f"{path}: the image entry {entry!r} needs an integer id, a file_name and "
                                        f"positive integer width and height")
            number, name = entry["id"], entry["file_name"]
            if number in records:
                raise DataNotFoundError(f"{path}: the image id {number} appears twice")
            if not (name in present or ("/" in name and (folder / name).is_file())):
                raise DataNotFoundError(f"{path} names the image {name!r} (id {number}) but {folder / name} "
                                        f"does not exist: fix the file or the files under data.root")
            records[number] = Record(str(folder / name), f"{path} (image id {number})",
                                     (entry["width"], entry["height"]), number)
        return records

    def add_annotation(self, annotation: Any, label_of: dict[int, int], records: dict[int, Record], path: Path) -> None:
        """Its clipped XYXY box to its image's record, or counted as dropped; malformed, or bad under error: raises."""
        if not (isinstance(annotation, dict) and "id" in annotation):
            raise DataNotFoundError(f"{path}: the annotation {annotation!r} has no id")
        number = annotation["id"]
        image, category, bbox = annotation.get("image_id"), annotation.get("category_id"), annotation.get("bbox")
        if image not in records:
            raise DataNotFoundError(f"{path}: annotation {number} names image_id {image!r}, which is not among the "
                                    f"file's {len(records)} images")
        if category not in label_of:
            raise DataNotFoundError(f"{path}: annotation {number} has category_id {category!r}, which is not among "
                                    f"the categories (ids {', '.join(map(str, label_of))})")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            raise DataNotFoundError(f"{path}: annotation {number} has bbox {bbox!r}: expected [x, y, width, height], "
                                    f"4 numbers")
        crowd = annotation.get("iscrowd", 0)
        if crowd not in (0, 1):
            raise DataNotFoundError(f"{path}: annotation {number} has iscrowd {crowd!r}: expected 0 or 1")
        x, y, w, h = bbox
        record = records[image]
        box, fault = box_fault((x, y, x + w, y + h), *record.size, slack=ROUNDING_SLACK)
        if fault is None:
            record.objects.append((box, label_of[category], crowd))
        elif self.invalid_boxes == "drop":
            record.dropped += 1
        else:
            width, height = record.size
            raise DataNotFoundError(
                f"{path}: annotation {number} (image id {image}) has bbox [x, y, width, height] = {bbox}, {fault}: "
                f"expected 0 <= x, 0 <= y, x + width <= {width}, y + height <= {height} (1 px more is clipped as "
                f"rounding) and a positive width and height (data.invalid_boxes=drop skips such boxes)")
