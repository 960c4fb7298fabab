"""Detection data: VOC XML through torchvision's VOCDetection, COCO JSON through CocoDetection, on real files.

The shapes generator's files (both layouts of the same scenes) and small hand-written VOC XML and
COCO JSON files with PIL JPEGs: boxes, labels, difficult/crowd objects, negatives, resizing and
flipping, the batch format, and the one-line errors for bad files.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from c3exp.data.coco import COCODetectionDataModule
from c3exp.data.detection import VOCDetectionDataModule, detection_collate
from c3exp.data.shapes import CLASSES, ShapesCOCODataModule, ShapesDetectionDataModule
from c3exp.errors import ConfigError, DataNotFoundError

WIDTH, HEIGHT = 40, 20  # the hand-written images: wide, so resizing has a shorter and a longer side
SMALL = {"min_size": HEIGHT, "max_size": WIDTH, "batch_size": 2, "num_workers": 0}  # no resize of 40x20 images


# -- writing files in the real formats ----------------------------------------------------------------
def picture(box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """A grey WIDTH x HEIGHT image, red inside `box` (0-based, right/bottom exclusive): shows where the object went."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    if box is not None:
        image.paste((255, 0, 0), box)
    return image


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
    return VOCDetectionDataModule(root=str(root), **settings)


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
    return COCODetectionDataModule(root=str(root), **files, **{"num_classes": 3, **SMALL, **kwargs})


def annotation(number: int, image: int, category: int, bbox: list[float], crowd: int = 0) -> dict:
    return {"id": number, "image_id": image, "category_id": category, "bbox": bbox, "iscrowd": crowd,
            "area": bbox[2] * bbox[3]}


def error_of(build, kind: type[Exception] = DataNotFoundError) -> str:
    """The message `build()` raises: one line."""
    with pytest.raises(kind) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the shapes scenes through both code paths ------------------------------------------------------------
SHAPES = {"train_images": 6, "val_images": 4, "image_size": 48, "batch_size": 4, "num_workers": 0}


def test_shapes_voc_xml_and_coco_json_give_the_same_samples(tmp_path):
    from_xml = ShapesDetectionDataModule(root=str(tmp_path), **SHAPES)
    from_json = ShapesCOCODataModule(root=str(tmp_path), **SHAPES)  # one generation serves both layouts
    from_xml.setup(), from_json.setup()
    assert from_xml.class_names == from_json.class_names == ["background", *CLASSES]
    assert from_xml.name == "shapes_detection" and from_json.name == "shapes_coco"
    for role, count in (("val", 4), ("test", 4)):
        xml_split, json_split = from_xml.dataset(role), from_json.dataset(role)
        assert len(xml_split) == len(json_split) == count
        for index in range(count):
            (image, target), (same_image, same_target) = xml_split[index], json_split[index]
            assert image.shape == (3, 48, 48) and torch.equal(image, same_image)  # no resize at min = max = 48
            assert len(target["boxes"]) >= 1
            for key in ("boxes", "labels", "iscrowd"):
                assert torch.equal(target[key], same_target[key]), key  # 1-based inclusive VOC == COCO XYWH exactly
    torch.manual_seed(0)  # training samples: the same flips under the same seed
    xml_train = [from_xml.dataset("train")[i] for i in range(6)]
    torch.manual_seed(0)
    json_train = [from_json.dataset("train")[i] for i in range(6)]
    for (image, target), (same_image, same_target) in zip(xml_train, json_train):
        assert torch.equal(image, same_image) and torch.equal(target["boxes"], same_target["boxes"])


def test_a_batch_has_the_documented_structure(tmp_path):
    for module in (ShapesDetectionDataModule, ShapesCOCODataModule):
        data = module(root=str(tmp_path), **SHAPES)
        data.setup("fit")
        images, targets = next(iter(data.train_dataloader()))
        assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 4
        for image, target in zip(images, targets):
            assert type(image) is torch.Tensor and image.dtype == torch.float32 and image.shape == (3, 48, 48)
            assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.2  # 0..1, not normalised
            assert set(target) == {"boxes", "labels", "iscrowd", "image_id"} and isinstance(target["image_id"], int)
            boxes, labels = target["boxes"], target["labels"]
            assert type(boxes) is torch.Tensor and boxes.dtype == torch.float32 and boxes.shape == (len(labels), 4)
            assert labels.dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
            assert ((1 <= labels) & (labels <= 3)).all() and target["iscrowd"].eq(0).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 48
        assert len(next(iter(data.val_dataloader()))[0]) == 4


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
    data = VOCDetectionDataModule(root=str(tmp_path))
    assert data.num_classes == 21 and data.class_names[0] == "background" and data.class_names[1] == "aeroplane"
    assert len(data.class_names) == 21 and data.splits == {"train": "trainval", "val": "test", "test": "test"}
    message = error_of(lambda: voc(tmp_path, num_classes=21), ConfigError)
    assert "data.num_classes=21" in message and "3: the background and the 2 data.class_names" in message
    message = error_of(lambda: voc(tmp_path, test_split="train_aug"), ConfigError)
    assert "data.test_split='train_aug'" in message and "train, trainval, val, test" in message
    message = error_of(lambda: voc(tmp_path, invalid_boxes="clip"), ConfigError)
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
    assert str(xml) in message and f"object 2 (dog)" in message and problem in message
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
    message = str(pytest.raises(DataNotFoundError, VOCDetectionDataModule(root=str(tmp_path)).setup, "fit").value)
    assert str((tmp_path / "VOCdevkit" / "VOC2007").resolve()) in message and "no such folder" in message
    assert "data.root" in message and "data.download=true" in message and "data=shapes_detection" in message
    write_voc(tmp_path, {"a": (picture(), voc_xml([]))})  # trainval only: the test set is its own archive
    message = str(pytest.raises(DataNotFoundError, VOCDetectionDataModule(root=str(tmp_path)).setup, "test").value)
    assert "no ImageSets/Main/test.txt" in message and "VOCtest_06-Nov-2007.tar" in message and "data.root" in message


# -- hand-written COCO -----------------------------------------------------------------------------------
def test_coco_categories_become_contiguous_labels_crowds_and_negatives_are_kept(tmp_path, capsys):
    write_coco(tmp_path, [annotation(1, 1, 7, [4, 2, 10, 10]), annotation(2, 1, 3, [20, 5, 10.5, 8], crowd=1),
                          annotation(3, 1, 7, [-0.6, 0, 40.8, 20.4])])  # the last: rounding past the edges, clipped
    data = coco(tmp_path)
    data.setup("fit")
    assert "loading annotations" not in capsys.readouterr().out  # pycocotools' prints silenced
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
    ("json", ["is not valid JSON: Expecting ',' delimiter at line 5, column 4"]),
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
    message = str(pytest.raises(DataNotFoundError, COCODetectionDataModule(root=str(tmp_path)).setup, "fit").value)
    assert str((tmp_path / "annotations" / "instances_train2017.json").resolve()) in message
    assert "data.root" in message and "cocodataset.org" in message and "train2017/*.jpg" in message
    assert "data=shapes_coco" in message
    write_coco(tmp_path, [])
    (tmp_path / "images").rename(tmp_path / "elsewhere")
    message = str(pytest.raises(DataNotFoundError, coco(tmp_path).setup, "fit").value)
    assert "no such folder: data.train_images=images" in message and "data.root" in message


def test_shapes_settings_are_checked(tmp_path):
    message = error_of(lambda: ShapesDetectionDataModule(root=str(tmp_path), train_images=0), ConfigError)
    assert "data.train_images=0" in message
    message = error_of(lambda: ShapesCOCODataModule(root=str(tmp_path), num_classes=5), ConfigError)
    assert "data.num_classes=5" in message and "circle, square, triangle" in message
    message = error_of(lambda: ShapesCOCODataModule(root=str(tmp_path), val_annotations="x.json"), ConfigError)
    assert "data.val_annotations='x.json'" in message
