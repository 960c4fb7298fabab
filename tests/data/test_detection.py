"""VOC detection data (c3exp/data/detection.py): VOC XML through torchvision's VOCDetection on small hand-written
files with PIL JPEGs: boxes, labels, difficult objects, negatives, resizing and flipping, the batch format, and
the one-line errors for bad files."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from c3exp.data.detection import VOCDetectionDataModule, detection_collate
from c3exp.errors import ConfigError, DataNotFoundError
from c3exp.schema import check_settings
from tests.conftest import HEIGHT, SMALL, WIDTH, error_of, picture
from tests.data import data_module


# -- writing files in VOC's format ----------------------------------------------------------------------------


def voc_xml(objects: list[dict], size: tuple[int, int] | None = (WIDTH, HEIGHT)) -> str:
    """An annotation in VOC's XML; each object {name, box (xmin, ymin, xmax, ymax: 1-based inclusive), difficult}."""
    parts = ["<annotation><folder>VOC2007</folder>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        parts.append(f"<object><name>{obj['name']}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{obj.get('difficult', 0)}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def voc_folder(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2007"


def write_voc(root: Path, samples: dict[str, tuple[Image.Image, str]], split: str = "trainval") -> Path:
    """Images and XML texts into the VOC 2007 layout under `root`, their ids listed in ImageSets/Main/<split>.txt."""
    folder = voc_folder(root)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, (image, xml) in samples.items():
        image.save(folder / "JPEGImages" / f"{name}.jpg", quality=100, subsampling=0)  # crisp edges
        (folder / "Annotations" / f"{name}.xml").write_text(xml)
    with open(folder / "ImageSets" / "Main" / f"{split}.txt", "a") as listing:
        listing.write("".join(f"{name}\n" for name in samples))
    return root


def voc(root: Path, **kwargs) -> VOCDetectionDataModule:
    settings = {"class_names": ["cat", "dog"], "num_classes": 3, "val_split": "trainval", "test_split": "trainval",
                **SMALL, **kwargs}
    return data_module("voc2007", root=str(root), **settings)


# -- hand-written VOC ------------------------------------------------------------------------------------


def test_voc_boxes_are_zero_based_and_follow_resize_and_flip(tmp_path):
    # the object covers pixels 4..13 x 2..11 (0-based): VOC writes 5..14 x 3..12, 1-based inclusive
    write_voc(tmp_path, {"a": (picture((4, 2, 14, 12)), voc_xml([{"name": "dog", "box": (5, 3, 14, 12)}]))})
    image, target = voc(tmp_path).dataset("val")[0]
    assert target["boxes"].tolist() == [[4, 2, 14, 12]] and target["labels"].tolist() == [2]
    assert image.shape == (3, HEIGHT, WIDTH)
    red = (image[0] > 0.8) & (image[1] < 0.2)
    assert red[2:12, 4:14].all() and red.sum() == 100  # the box is where the object is

    # shorter side 20 -> 40 (x2): 80x40
    image, target = voc(tmp_path, min_size=40, max_size=100).dataset("val")[0]
    assert image.shape == (3, 40, 80) and target["boxes"].tolist() == [[8, 4, 28, 24]]
    # longer side capped: 40 * 1.5 = 60 <= max_size 60, shorter side 30
    image, target = voc(tmp_path, min_size=40, max_size=60).dataset("val")[0]
    assert image.shape == (3, 30, 60) and target["boxes"].tolist() == [[6, 3, 21, 18]]

    # training flips half the images: the box moves with the image (x -> 80 - x)
    train = voc(tmp_path, min_size=40, max_size=100).dataset("train")
    torch.manual_seed(0)
    seen = set()
    for _ in range(16):
        image, target = train[0]
        box = target["boxes"][0].tolist()
        assert box in ([8, 4, 28, 24], [52, 4, 72, 24])
        left, top, right, bottom = map(int, box)
        inside = image[:, top + 1:bottom - 1, left + 1:right - 1]  # away from the resampled edges
        assert (inside[0] > 0.8).all() and (inside[1] < 0.2).all()
        seen.add(box[0])
    assert seen == {8, 52}
    no_flip = voc(tmp_path, min_size=40, max_size=100, hflip=False).dataset("train")
    assert all(no_flip[0][1]["boxes"].tolist() == [[8, 4, 28, 24]] for _ in range(8))


def test_multi_scale_training_draws_a_size_evaluation_takes_the_largest(tmp_path):
    write_voc(tmp_path, {"a": (picture(), voc_xml([{"name": "cat", "box": (1, 1, 40, 20)}]))})
    data = voc(tmp_path, min_size=[10, 30], max_size=100)
    torch.manual_seed(0)
    heights = {data.dataset("train")[0][0].shape[1] for _ in range(16)}
    assert heights == {10, 30}
    image, target = data.dataset("val")[0]
    assert image.shape == (3, 30, 60) and target["boxes"].tolist() == [[0, 0, 60, 30]]


def test_difficult_objects_are_crowd_or_dropped_and_an_empty_image_is_a_negative(tmp_path):
    objects = [{"name": "cat", "box": (2, 2, 10, 10)}, {"name": "dog", "box": (20, 5, 30, 15), "difficult": 1}]
    write_voc(tmp_path, {"two": (picture(), voc_xml(objects)), "none": (picture(), voc_xml([]))})
    split = voc(tmp_path).dataset("val")
    target = split[0][1]
    assert target["labels"].tolist() == [1, 2] and target["iscrowd"].tolist() == [0, 1]
    assert voc(tmp_path, use_difficult=False).dataset("val")[0][1]["labels"].tolist() == [1]
    image, negative = split[1]
    assert negative["boxes"].shape == (0, 4) and negative["boxes"].dtype == torch.float32
    assert negative["labels"].shape == (0,) and negative["labels"].dtype == torch.int64
    assert negative["iscrowd"].shape == (0,) and negative["image_id"] == 1
    images, targets = detection_collate([split[0], split[1]])
    assert len(images) == 2 and targets[1]["boxes"].shape == (0, 4)


def test_voc_class_names_and_num_classes(tmp_path):
    data = data_module("voc2007", root=str(tmp_path))
    assert data.num_classes == 21 and data.class_names[0] == "background" and data.class_names[1] == "aeroplane"
    assert len(data.class_names) == 21 and data.splits == {"train": "trainval", "val": "test", "test": "test"}
    message = error_of(lambda: voc(tmp_path, num_classes=21), ConfigError)
    assert "data.num_classes=21" in message and "3: the background and the 2 data.class_names" in message
    message = error_of(lambda: voc(tmp_path, test_split="train_aug"), ConfigError)
    assert "data.test_split='train_aug'" in message and "train, trainval, val, test" in message
    message = error_of(lambda: check_settings({"invalid_boxes": "clip"}, VOCDetectionDataModule, "data."), ConfigError)
    assert "data.invalid_boxes='clip'" in message and "drop" in message
    message = error_of(lambda: voc(tmp_path, min_size=50, max_size=40), ConfigError)
    assert "data.min_size=50" in message and "1..40" in message


@pytest.mark.parametrize("box,problem", [((30, 5, 41, 15), "outside its 40x20"), ((0, 5, 10, 15), "outside its 40x20"),
                                         ((10, 5, 8, 15), "zero or negative area")])
def test_a_bad_voc_box_is_one_line_naming_the_file_or_is_dropped(tmp_path, caplog, box, problem):
    objects = [{"name": "cat", "box": (2, 2, 10, 10)}, {"name": "dog", "box": box}]
    write_voc(tmp_path, {"ok": (picture(), voc_xml(objects[:1])), "bad": (picture(), voc_xml(objects))})
    message = error_of(lambda: voc(tmp_path).setup("fit"))
    xml = voc_folder(tmp_path) / "Annotations" / "bad.xml"
    assert str(xml) in message and "object 2 (dog)" in message and problem in message
    assert "xmin={}, ymin={}, xmax={}, ymax={}".format(*box) in message and "data.invalid_boxes=drop" in message
    with caplog.at_level(logging.WARNING, logger="c3exp.data.detection"):
        data = voc(tmp_path, invalid_boxes="drop")
        data.setup("validate")
    assert data.dataset("val")[1][1]["labels"].tolist() == [1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 1 box " in warnings[0] and "trainval.txt" in warnings[0]


def test_bad_voc_files_are_one_line_naming_the_file_and_value(tmp_path):
    write_voc(tmp_path, {"a": (picture(), voc_xml([{"name": "cow", "box": (2, 2, 10, 10)}]))})
    message = error_of(lambda: voc(tmp_path).setup("fit"))
    assert "a.xml: object 1 is named 'cow'" in message and "not in data.class_names (cat, dog)" in message

    (voc_folder(tmp_path) / "Annotations" / "a.xml").write_text("<annotation><object><name>cat</name></annotation>")
    message = error_of(lambda: voc(tmp_path).setup("fit"))
    assert "a.xml is not valid XML" in message and "line 1" in message

    listing = voc_folder(tmp_path) / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text("a\nghost\n")
    (voc_folder(tmp_path) / "Annotations" / "a.xml").write_text(voc_xml([]))
    message = error_of(lambda: voc(tmp_path).setup("fit"))
    assert f"{listing} names 'ghost'" in message and "ghost.jpg does not exist" in message
    assert f"data.root={tmp_path}" in message

    listing.write_text("a\n")  # an image whose size is not the XML's
    picture().resize((30, 20)).save(voc_folder(tmp_path) / "JPEGImages" / "a.jpg")
    message = error_of(lambda: voc(tmp_path).dataset("val")[0])
    assert "a.jpg is 30x20" in message and "a.xml says 40x20" in message


def test_missing_voc_is_a_paragraph_naming_data_root(tmp_path):
    message = str(pytest.raises(DataNotFoundError, data_module("voc2007", root=str(tmp_path)).setup, "fit").value)
    assert str((tmp_path / "VOCdevkit" / "VOC2007").resolve()) in message and "no such folder" in message
    assert "data.root" in message and "data.download=true" in message and "data=shapes_detection" in message
    write_voc(tmp_path, {"a": (picture(), voc_xml([]))})  # trainval only: the test set is its own archive
    message = str(pytest.raises(DataNotFoundError, data_module("voc2007", root=str(tmp_path)).setup, "test").value)
    assert "no ImageSets/Main/test.txt" in message and "VOCtest_06-Nov-2007.tar" in message and "data.root" in message
