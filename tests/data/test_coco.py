"""COCO detection data (c3exp/data/coco.py): COCO instances JSON in CocoDetection's image order on small hand-written
files with PIL JPEGs: contiguous labels, crowds, negatives, and the one-line errors for bad files."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from c3exp.data.coco import COCODetectionDataModule
from c3exp.errors import ConfigError, DataNotFoundError
from tests.conftest import HEIGHT, SMALL, WIDTH, error_of, picture
from tests.data import data_module


CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # out of order, not contiguous: labels by id


def write_coco(root: Path, annotations: list[dict], images: list[dict] | None = None, text: str | None = None) -> Path:
    """Images 1 and 2 (WIDTH x HEIGHT JPEGs) in root/images and a COCO instances file root/annotations.json."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = images if images is not None else [
        {"id": number, "file_name": f"{number}.jpg", "width": WIDTH, "height": HEIGHT} for number in (1, 2)]
    for entry in images:
        picture((4, 2, 14, 12)).save(root / "images" / entry["file_name"], quality=100, subsampling=0)  # crisp edges
    content = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations.json").write_text(text if text is not None else json.dumps(content, indent=1))
    return root


def coco(root: Path, **kwargs) -> COCODetectionDataModule:
    files = {f"{role}_{kind}": path for role in ("train", "val")
             for kind, path in (("images", "images"), ("annotations", "annotations.json"))}
    return data_module("coco2017", root=str(root), **files, **{"num_classes": 3, "invalid_boxes": "error", **SMALL, **kwargs})


def annotation(number: int, image: int, category: int, bbox: list[float], crowd: int = 0) -> dict:
    return {"id": number, "image_id": image, "category_id": category, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3]}


def test_coco_categories_become_contiguous_labels_crowds_and_negatives_are_kept(tmp_path):
    write_coco(tmp_path, [annotation(1, 1, 7, [4, 2, 10, 10]), annotation(2, 1, 3, [20, 5, 10.5, 8], crowd=1),
                          annotation(3, 1, 7, [-0.6, 0, 40.8, 20.4])])  # the last: rounding past the edges, clipped
    data = coco(tmp_path)
    data.setup("fit")
    assert data.class_names == ["background", "cat", "dog"]  # ascending category id: 3 -> 1, 7 -> 2
    image, target = data.dataset("val")[0]
    assert image.shape == (3, HEIGHT, WIDTH) and target["image_id"] == 1
    assert target["labels"].tolist() == [2, 1, 2] and target["iscrowd"].tolist() == [0, 1, 0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[4, 2, 14, 12], [20, 5, 30.5, 13], [0, 0, 40, 20]]))
    image, negative = data.dataset("val")[1]  # image 2 has no annotations
    assert negative["image_id"] == 2 and negative["boxes"].shape == (0, 4) and negative["labels"].dtype == torch.int64
    images, targets = next(iter(coco(tmp_path, min_size=40, max_size=100).val_dataloader()))
    assert images[0].shape == (3, 40, 80) and targets[0]["boxes"][0].tolist() == [8, 4, 28, 24]
    assert targets[1]["boxes"].shape == (0, 4)


def test_coco_num_classes_must_count_the_categories(tmp_path):
    write_coco(tmp_path, [annotation(1, 1, 7, [4, 2, 10, 10])])
    message = error_of(lambda: coco(tmp_path, num_classes=81).setup("fit"), ConfigError)
    assert "data.num_classes=81" in message and "3: the background and the 2 categories" in message
    assert "annotations.json" in message


@pytest.mark.parametrize("case,expected", [
    ("json", ["is not valid JSON: ", " at line 5, column 4"]),  # between them, Python's json names the fault
    ("keys", ["lacks the top-level list categories", "expected images, annotations, categories"]),
    ("category", ["annotation 5 has category_id 4", "not among the categories (ids 3, 7)"]),
    ("image", ["annotation 5 names image_id 9", "not among the file's 2 images"]),
    ("outside", ["annotation 5 (image id 1) has bbox [x, y, width, height] = [35, 2, 8, 5]", "outside its 40x20",
                 "data.invalid_boxes=drop"]),
    ("empty", ["annotation 5 (image id 1) has bbox [x, y, width, height] = [5, 2, 0, 5]", "zero or negative area"]),
    ("file", ["names the image '2.jpg' (id 2)", "2.jpg does not exist"]),
])
def test_bad_coco_files_are_one_line_naming_the_file_and_value(tmp_path, case, expected):
    bad = {"category": annotation(5, 1, 4, [1, 1, 5, 5]), "image": annotation(5, 9, 3, [1, 1, 5, 5]),
           "outside": annotation(5, 1, 3, [35, 2, 8, 5]), "empty": annotation(5, 1, 3, [5, 2, 0, 5])}
    write_coco(tmp_path, [annotation(1, 1, 7, [4, 2, 10, 10]), *([bad[case]] if case in bad else [])])
    path = tmp_path / "annotations.json"
    if case == "json":
        path.write_text(path.read_text().replace('"id": 1,', '"id": 1', 1))
    elif case == "keys":
        path.write_text(json.dumps({"images": [], "annotations": []}))
    elif case == "file":
        (tmp_path / "images" / "2.jpg").unlink()
    message = error_of(lambda: coco(tmp_path).setup("fit"))
    assert str(path) in message
    for text in expected:
        assert text in message


def test_bad_coco_boxes_can_be_dropped_with_one_warning(tmp_path, caplog):
    write_coco(tmp_path, [annotation(1, 1, 7, [4, 2, 10, 10]), annotation(2, 1, 3, [35, 2, 8, 5]),
                          annotation(3, 2, 3, [5, 2, 0, 5])])
    with caplog.at_level(logging.WARNING, logger="c3exp.data.detection"):
        data = coco(tmp_path, invalid_boxes="drop")
        data.setup("validate")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 2 boxes" in warnings[0] and "annotations.json" in warnings[0]
    split = data.dataset("val")
    assert split[0][1]["labels"].tolist() == [2] and split[1][1]["boxes"].shape == (0, 4)


def test_missing_coco_is_a_paragraph_naming_data_root_and_where_to_get_it(tmp_path):
    message = str(pytest.raises(DataNotFoundError, data_module("coco2017", root=str(tmp_path)).setup, "fit").value)
    assert str((tmp_path / "annotations" / "instances_train2017.json").resolve()) in message
    assert "data.root" in message and "cocodataset.org" in message and "train2017/*.jpg" in message
    assert "data=shapes_coco" in message
    write_coco(tmp_path, [])
    (tmp_path / "images").rename(tmp_path / "elsewhere")
    message = str(pytest.raises(DataNotFoundError, coco(tmp_path).setup, "fit").value)
    assert "no such folder: data.train_images=images" in message and "data.root" in message
