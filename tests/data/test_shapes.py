"""The shapes generator and its data modules (c3exp/data/shapes.py): the VOC layout and COCO JSON, read back by
torchvision; determinism; occlusion; segmentation and detection batches from the same scenes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from c3exp.data.shapes import (
    CLASSES,
    NUM_CLASSES,
    VOC_FOLDER,
    Scene,
    Shape,
    ShapesDataModule,
    ShapesDetectionDataModule,
    ensure_shapes_dataset,
    regular_polygon,
    render,
    voc_palette,
    write_shapes_dataset,
)
from c3exp.errors import ConfigError
from c3exp.schema import check_settings
from tests.conftest import error_of
from tests.data import data_config, data_module


SPLITS = {"train": 6, "val": 3}


def write(root: Path, seed: int = 0, size: int = 48) -> Path:
    return write_shapes_dataset(root, SPLITS, image_size=size, seed=seed)


def ids(root: Path, split: str) -> list[str]:
    return (root / VOC_FOLDER / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def test_files_follow_the_voc_layout(tmp_path):
    root = write(tmp_path)
    voc = root / VOC_FOLDER
    for split, count in SPLITS.items():
        names = ids(root, split)
        assert len(names) == count and (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split() == names
        for name in names:
            image = Image.open(voc / "JPEGImages" / f"{name}.jpg")
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (48, 48)
            mask = Image.open(voc / "SegmentationClass" / f"{name}.png")
            assert mask.format == "PNG" and mask.mode == "P" and mask.size == (48, 48)
            assert mask.getpalette()[: 3 * 256] == voc_palette()
            assert set(np.unique(np.asarray(mask)).tolist()) <= {*range(NUM_CLASSES), 255}
            assert (voc / "Annotations" / f"{name}.xml").is_file()
    all_labels = set()
    for name in ids(root, "train"):
        all_labels |= set(np.unique(np.asarray(Image.open(voc / "SegmentationClass" / f"{name}.png"))).tolist())
    assert {0, 255} <= all_labels and len(all_labels) >= 4  # background, void borders and objects


def test_palette_is_vocs():
    palette = voc_palette()
    colour = lambda label: tuple(palette[3 * label : 3 * label + 3])  # noqa: E731
    assert colour(0) == (0, 0, 0) and colour(1) == (128, 0, 0) and colour(2) == (0, 128, 0)
    assert colour(3) == (128, 128, 0) and colour(15) == (192, 128, 128) and colour(255) == (224, 224, 192)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first, again, other = (file_bytes(write(tmp_path / name, seed)) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert first == again
    assert first.keys() == other.keys()
    changed = [name for name in first if name.endswith(".jpg") and first[name] != other[name]]
    assert len(changed) == sum(SPLITS.values())


def test_an_image_depends_only_on_seed_split_and_index(tmp_path):
    small = write_shapes_dataset(tmp_path / "small", {"train": 2, "val": 1}, image_size=48, seed=0)
    large = write(tmp_path / "large")
    for name in ("train_00001.jpg", "val_00000.jpg"):
        path = VOC_FOLDER / "JPEGImages" / name
        assert (small / path).read_bytes() == (large / path).read_bytes()


def test_detection_xml_reads_through_torchvision_and_matches_the_coco_json(tmp_path):
    root = write(tmp_path)
    for split in SPLITS:
        voc = datasets.VOCDetection(str(root), year="2012", image_set=split)  # ImageSets/Main + Annotations
        coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert [(c["id"], c["name"]) for c in coco["categories"]] == list(enumerate(CLASSES, start=1))
        by_image = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            by_image[annotation["image_id"]].append(annotation)
            assert annotation["iscrowd"] == 0 and annotation["area"] == annotation["bbox"][2] * annotation["bbox"][3]
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        assert [image["file_name"] for image in coco["images"]] == [f"{name}.jpg" for name in ids(root, split)]
        for (image, target), coco_image in zip(voc, coco["images"]):
            annotation = target["annotation"]
            assert annotation["filename"] == coco_image["file_name"]
            assert (annotation["size"]["width"], annotation["size"]["height"]) == (str(image.width), str(image.height))
            objects = annotation["object"]
            assert 1 <= len(objects) <= 4 and len(objects) == len(by_image[coco_image["id"]])
            for obj, record in zip(objects, by_image[coco_image["id"]]):
                xmin, ymin, xmax, ymax = (int(obj["bndbox"][key]) for key in ("xmin", "ymin", "xmax", "ymax"))
                assert 1 <= xmin <= xmax <= image.width and 1 <= ymin <= ymax <= image.height
                assert record["bbox"] == [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]
                assert CLASSES[record["category_id"] - 1] == obj["name"] and obj["difficult"] == "0"


def square_and_circle(size: int = 40, hidden: bool = False) -> Scene:
    """A square (label 2) partly covered by a circle (label 1); with `hidden`, a small triangle under the circle."""
    shapes = [Shape(2, regular_polygon("square", (15, 15), 10, np.pi / 4), (200, 0, 0))]
    if hidden:
        shapes.insert(0, Shape(3, regular_polygon("triangle", (25, 25), 3, 0.0), (0, 0, 200)))
    shapes.append(Shape(1, regular_polygon("circle", (25, 25), 9, 0.0), (0, 200, 0)))
    return Scene(np.full((size, size, 3), 128, np.uint8), tuple(shapes), noise=0.0)


def test_the_mask_shows_what_is_visible_and_boxes_the_whole_shape():
    rendered = render(square_and_circle())
    mask = np.asarray(rendered.mask)
    assert mask[25, 25] == 1 and mask[8, 8] == 2 and mask[38, 38] == 0
    assert mask[20, 20] == 1  # inside both: the later circle wins
    square_box, circle_box = rendered.boxes
    assert square_box[:2] == (5, 5) and 24 <= square_box[2] <= 27  # the full square, though partly hidden
    rows, cols = np.nonzero(mask == 2)
    assert rows.max() < square_box[3] and cols.max() < square_box[2]
    inside_circle = np.hypot(*np.mgrid[0:40, 0:40] - 25) < 8
    assert np.all(mask[inside_circle] == 1)
    # VOC's void outline: every boundary between two labels is 255 on one side
    assert np.all(mask[np.hypot(*np.mgrid[0:40, 0:40] - 25).round() == 9] != 2)
    image = np.asarray(rendered.image)
    assert tuple(image[25, 25]) == (0, 200, 0) and tuple(image[8, 8]) == (200, 0, 0)


def test_a_hidden_shape_has_no_annotation():
    rendered = render(square_and_circle(hidden=True))
    assert rendered.boxes[0] is None and 3 not in np.asarray(rendered.mask)
    assert all(box is not None for box in rendered.boxes[1:])


def test_concurrent_writers_leave_one_complete_dataset(tmp_path):
    root = tmp_path / "shapes"
    errors = []

    def writer():
        try:
            ensure_shapes_dataset(root, SPLITS, 32, 0)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(p.name for p in root.iterdir()) == ["VOCdevkit", "annotations", "shapes.json"]  # no scratch left
    reference = write_shapes_dataset(tmp_path / "reference", SPLITS, 32, 0)
    assert file_bytes(root / "VOCdevkit") == file_bytes(reference / "VOCdevkit")


def test_the_scratch_of_a_killed_writer_is_gone_after_the_next_generation(tmp_path):
    """SIGKILL skips every `finally`: the next writer removes scratch of dead processes, not of live ones."""
    root = tmp_path / "shapes"
    code = f"from c3exp.data.shapes import ensure_shapes_dataset as e; e(__import__('pathlib').Path({str(root)!r}), {{'train': 100000, 'val': 1}}, 32, 0)"
    writer = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while not list(root.glob(".shapes-*/VOCdevkit")) and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert list(root.glob(".shapes-*/VOCdevkit")), "the writer never started"
    live = root / f".shapes-{socket.gethostname()}-{os.getpid()}-busy"  # a writer still at work (this process)
    live.mkdir()
    ensure_shapes_dataset(root, SPLITS, 32, 0)
    assert sorted(p.name for p in root.iterdir()) == [live.name, "VOCdevkit", "annotations", "shapes.json"]


def test_data_written_with_other_settings_is_not_reused(tmp_path):
    ensure_shapes_dataset(tmp_path, SPLITS, 32, 0)
    ensure_shapes_dataset(tmp_path, SPLITS, 32, 0)  # present: nothing to do
    with pytest.raises(ConfigError, match="data.root"):
        ensure_shapes_dataset(tmp_path, SPLITS, 32, 1)


def test_shapes_data_module_writes_on_first_use_and_reads_it_as_voc(tmp_path):
    data = data_module("shapes", root=str(tmp_path / "shapes"), train_images=6, val_images=3, image_size=32,
                       crop_size=32, batch_size=4, num_workers=0)
    assert data.num_classes == NUM_CLASSES and data.class_names == ["background", *CLASSES]
    data.prepare_data()
    data.setup("fit")
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 32, 32)
    assert len(data.dataset("val")) == 3
    with pytest.raises(ConfigError, match="data.train_images"):
        check_settings({"train_images": 0}, ShapesDataModule, "data.")


def test_the_shapes_config_trains_from_nothing(tmp_path):
    settings = data_config("shapes")
    assert settings._target_ == "c3exp.data.shapes.ShapesDataModule"
    data = data_module("shapes", root=str(tmp_path), train_images=16, val_images=4)
    data.prepare_data()
    data.setup("fit")
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (settings["batch_size"], 3, 64, 64) and masks.shape == (settings["batch_size"], 64, 64)


# -- the detection data modules: the same scenes through VOC XML and COCO JSON ------------------------------


SHAPES = {"train_images": 6, "val_images": 4, "image_size": 48, "batch_size": 4, "num_workers": 0}


def test_shapes_voc_xml_and_coco_json_give_the_same_samples(tmp_path):
    from_xml = data_module("shapes_detection", root=str(tmp_path), **SHAPES)
    from_json = data_module("shapes_coco", root=str(tmp_path), **SHAPES)  # one generation serves both layouts
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
    for choice in ("shapes_detection", "shapes_coco"):
        data = data_module(choice, root=str(tmp_path), **SHAPES)
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


def test_shapes_settings_are_checked(tmp_path):
    message = error_of(lambda: check_settings({"train_images": 0}, ShapesDetectionDataModule, "data."), ConfigError)
    assert "data.train_images=0" in message
    message = error_of(lambda: data_module("shapes_coco", root=str(tmp_path), num_classes=5), ConfigError)
    assert "data.num_classes=5" in message and "circle, square, triangle" in message
    message = error_of(lambda: data_module("shapes_coco", root=str(tmp_path), val_annotations="x.json"), ConfigError)
    assert "data.val_annotations='x.json'" in message
