"""Offline segmentation and detection data: coloured shapes in PASCAL VOC 2012's layout plus a COCO JSON, read through
exactly the code paths real VOC and COCO take. Colours are independent of the class."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from c3exp.data.coco import COCODetectionDataModule
from c3exp.data.detection import VOCDetectionDataModule
from c3exp.data.voc import VOCSegmentationDataModule
from c3exp.errors import check
from c3exp.schema import PositiveInt
from c3exp.results import write_json

CLASSES = ("circle", "square", "triangle")
NUM_CLASSES = len(CLASSES) + 1  # with the background, label 0
VOID = 255  # VOC's "void" label: object borders and unlabelled pixels, ignored by the loss
VOC_FOLDER = Path("VOCdevkit", "VOC2012")
METADATA = "shapes.json"  # the generator arguments, beside VOCdevkit
MAX_OBJECTS = 4  # shapes in a scene at most
SCRATCH_PREFIX = ".shapes-"  # .shapes-<host>-<pid>-<random>: a writer's private folder inside the root
COCO_CATEGORIES = [{"id": label, "name": name, "supercategory": "shape"} for label, name in enumerate(CLASSES, start=1)]

# (vertices, scale): similar areas for one size (pi r^2, 3.24 r^2, 2.92 r^2), so no class dominates the pixels
_VERTICES = {"circle": (32, 1.0), "square": (4, 0.9 * math.sqrt(2)), "triangle": (3, 1.5)}
# Squares stay near axis-aligned (vertices at 45 degrees +- 0.25: sides along the axes): a freely rotated 10 px
# square looks like a circle (val mIoU 0.70 instead of 0.83); the other shapes turn freely
_ANGLES = {"square": (math.pi / 4 - 0.25, math.pi / 4 + 0.25)}


def voc_palette() -> list[int]:
    """VOC's colour map, flat RGB for labels 0..255: label bits 0, 1, 2 to the top bits of R, G, B, then 3, 4, 5..."""
    labels = np.arange(256)[:, None]
    return sum(((labels >> (3 * bit + np.arange(3))) & 1) << (7 - bit) for bit in range(8)).ravel().tolist()


_PALETTE = voc_palette()


@dataclass(frozen=True)
class Shape:
    """One object: its class label (1..len(CLASSES)), polygon vertices in pixel coordinates, RGB fill."""

    label: int
    polygon: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]


@dataclass(frozen=True, eq=False)  # holds an array: compare the rendered files instead
class Scene:
    """A background (H, W, 3) uint8 array and the shapes drawn over it in order (later ones occlude)."""

    background: np.ndarray
    shapes: tuple[Shape, ...]
    noise_seed: int = 0
    noise: float = 6.0


@dataclass(frozen=True, eq=False)
class Rendered:
    """Image, class mask and each shape's whole (occluded too) clipped box, right/bottom exclusive; None: hidden."""

    image: Image.Image
    mask: Image.Image
    boxes: tuple[tuple[int, int, int, int] | None, ...]


def regular_polygon(name: str, centre: tuple[float, float], radius: float, angle: float) -> tuple[tuple[float, float], ...]:
    """The vertices of a circle (a 32-gon), square or equilateral triangle of the given size."""
    count, scale = _VERTICES[name]
    return tuple(
        (centre[0] + scale * radius * math.cos(angle + 2 * math.pi * k / count),
         centre[1] + scale * radius * math.sin(angle + 2 * math.pi * k / count))
        for k in range(count)
    )


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float background: smooth blotches, stripes or a gradient around a random colour."""
    base = rng.uniform(50, 205, size=3)
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(3)
    if kind == 0:  # low-frequency noise: a coarse random grid, smoothly upsampled
        coarse = rng.normal(0, 25, size=(4, 4, 3)).astype(np.float32)
        pattern = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BICUBIC))
                            for c in range(3)], axis=-1)
    elif kind == 1:  # stripes in a random direction and period
        theta, period = rng.uniform(0, math.pi), rng.uniform(0.08, 0.3)
        wave = np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period)
        pattern = wave[..., None] * rng.uniform(10, 30, size=3)
    else:  # a linear gradient towards another colour
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (x - 0.5) * math.cos(theta) + (y - 0.5) * math.sin(theta)
        pattern = ramp[..., None] * rng.uniform(-80, 80, size=3)
    return base + pattern


def _distinct_colour(rng: np.random.Generator, avoid: Sequence[np.ndarray], distance: float = 90.0) -> np.ndarray:
    """A random RGB colour at least `distance` away from each of `avoid` (the best of 20 tries otherwise)."""
    best, best_gap = None, -1.0
    for _ in range(20):
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        gap = min((float(np.linalg.norm(colour - other)) for other in avoid), default=math.inf)
        if gap >= distance:
            return colour
        if gap > best_gap:
            best, best_gap = colour, gap
    return best


def random_scene(rng: np.random.Generator, size: int) -> Scene:
    """1..MAX_OBJECTS shapes of random class, size (12-40% of the side, >= 10 px), angle, place and colour."""
    texture = _texture(rng, size)
    colours = [texture.mean(axis=(0, 1))]
    shapes = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        label = int(rng.integers(1, len(CLASSES) + 1))
        radius = max(10.0, rng.uniform(0.12, 0.40) * size) / 2
        centre = tuple(rng.uniform(radius / 2, size - radius / 2, size=2))
        angle = rng.uniform(*_ANGLES.get(CLASSES[label - 1], (0.0, 2 * math.pi)))
        colour = _distinct_colour(rng, colours)
        colours.append(colour)
        polygon = regular_polygon(CLASSES[label - 1], centre, radius, angle)
        shapes.append(Shape(label, polygon, tuple(int(c) for c in colour)))
    return Scene(np.clip(texture, 0, 255).astype(np.uint8), tuple(shapes), noise_seed=int(rng.integers(2**31)))


def render(scene: Scene) -> Rendered:
    """Shapes in order; the mask keeps visible classes, outlines VOID as VOC's; pixel noise gives objects texture."""
    height, width = scene.background.shape[:2]
    image = Image.fromarray(scene.background)
    mask = Image.new("P", (width, height), 0)
    mask.putpalette(_PALETTE)
    instances = Image.new("L", (width, height), 0)  # which shape each pixel shows, to find hidden ones
    draw_image, draw_mask, draw_instances = ImageDraw.Draw(image), ImageDraw.Draw(mask), ImageDraw.Draw(instances)
    boxes = []
    for index, shape in enumerate(scene.shapes, start=1):
        draw_image.polygon(shape.polygon, fill=shape.colour, outline=shape.colour)
        draw_mask.polygon(shape.polygon, fill=shape.label, outline=VOID)
        draw_instances.polygon(shape.polygon, fill=index, outline=index)
        alone = Image.new("1", (width, height), 0)
        ImageDraw.Draw(alone).polygon(shape.polygon, fill=1, outline=1)
        boxes.append(alone.getbbox())
    visible = set(np.unique(np.asarray(instances)).tolist())
    pixels = np.asarray(image, dtype=np.float32)
    pixels += np.random.default_rng(scene.noise_seed).normal(0, scene.noise, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return Rendered(image, mask, tuple(box if i in visible else None for i, box in enumerate(boxes, start=1)))


def _xml(parent: ET.Element, fields: Sequence[tuple[str, Any]]) -> ET.Element:
    """Children of `parent`: (tag, text) pairs, or (tag, [pairs]) for an element with children of its own."""
    for tag, value in fields:
        child = ET.SubElement(parent, tag)
        if isinstance(value, list):
            _xml(child, value)
        else:
            child.text = str(value)
    return parent


def voc_annotation(image_id: str, scene: Scene, rendered: Rendered) -> bytes:
    """The VOC detection XML of a scene: one <object> per visible shape, boxes 1-based and inclusive."""
    width, height = rendered.image.size
    objects = [("object", [
        ("name", CLASSES[shape.label - 1]), ("pose", "Unspecified"),
        ("truncated", int(any(not (0 <= x <= width and 0 <= y <= height) for x, y in shape.polygon))),
        ("difficult", 0), ("bndbox", [("xmin", box[0] + 1), ("ymin", box[1] + 1), ("xmax", box[2]), ("ymax", box[3])]),
    ]) for shape, box in zip(scene.shapes, rendered.boxes) if box is not None]
    root = _xml(ET.Element("annotation"), [
        ("folder", "VOC2012"), ("filename", f"{image_id}.jpg"), ("source", [("database", "c3exp shapes")]),
        ("size", [("width", width), ("height", height), ("depth", 3)]), ("segmented", 1), *objects])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def coco_annotations(image_number: int, rendered: Rendered, scene: Scene, first_id: int) -> list[dict]:
    """COCO instance records of a scene's visible shapes: box [x, y, w, h]; segmentation and area are the box's."""
    visible = [(shape.label, box) for shape, box in zip(scene.shapes, rendered.boxes) if box is not None]
    return [{
        "id": first_id + number, "image_id": image_number, "category_id": label,
        "bbox": [left, top, right - left, bottom - top], "area": (right - left) * (bottom - top), "iscrowd": 0,
        "segmentation": [[left, top, right, top, right, bottom, left, bottom]],
    } for number, (label, (left, top, right, bottom)) in enumerate(visible)]


def write_shapes_dataset(root: Path | str, splits: Mapping[str, int], image_size: int, seed: int) -> Path:
    """Write each split's scenes under `root`, byte-identical for the same arguments; return `root`."""
    splits, root = dict(splits), Path(root)
    voc = root / VOC_FOLDER
    folders = {name: voc / name for name in ("JPEGImages", "SegmentationClass", "Annotations")}
    lists = [voc / "ImageSets" / "Segmentation", voc / "ImageSets" / "Main"]
    for folder in [*folders.values(), *lists, root / "annotations"]:
        folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []  # COCO's, numbered across the splits
    for split, count in splits.items():
        ids, first_image, first_annotation = [f"{split}_{i:05d}" for i in range(count)], len(images), len(annotations)
        for index, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])  # independent of the other splits
            scene = random_scene(rng, image_size)
            rendered = render(scene)
            rendered.image.save(folders["JPEGImages"] / f"{image_id}.jpg", quality=95)
            rendered.mask.save(folders["SegmentationClass"] / f"{image_id}.png")
            (folders["Annotations"] / f"{image_id}.xml").write_bytes(voc_annotation(image_id, scene, rendered))
            annotations += coco_annotations(len(images), rendered, scene, len(annotations) + 1)
            images.append({"id": len(images), "file_name": f"{image_id}.jpg", "width": image_size,
                           "height": image_size})
        listing = "".join(f"{image_id}\n" for image_id in ids)
        for folder in lists:
            (folder / f"{split}.txt").write_text(listing)
        coco = {"images": images[first_image:], "annotations": annotations[first_annotation:],
                "categories": COCO_CATEGORIES}
        write_json(root / "annotations" / f"instances_{split}.json", coco)
    write_json(root / METADATA, _metadata(splits, image_size, seed))
    return root


def _metadata(splits: Mapping[str, int], image_size: int, seed: int) -> dict:
    return {"splits": dict(splits), "image_size": image_size, "seed": seed, "max_objects": MAX_OBJECTS}


def ensure_shapes_dataset(root: Path, splits: Mapping[str, int], image_size: int, seed: int) -> None:
    """Write the dataset into `root` unless there; concurrent writers each rename a scratch folder in: first wins."""
    wanted = _metadata(splits, image_size, seed)
    if not (root / VOC_FOLDER / "ImageSets" / "Segmentation" / "train.txt").is_file():
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(root)
        prefix = f"{SCRATCH_PREFIX}{socket.gethostname()}-{os.getpid()}-"
        # removed after an error, Ctrl-C or a run's SIGTERM too (c3exp train turns it into SystemExit)
        with tempfile.TemporaryDirectory(prefix=prefix, dir=root, ignore_cleanup_errors=True) as scratch:
            write_shapes_dataset(scratch, splits, image_size, seed)
            for name in (METADATA, "annotations", VOC_FOLDER.parts[0]):
                with contextlib.suppress(OSError):  # another process got there first
                    os.rename(Path(scratch, name), root / name)
    metadata = root / METADATA
    found = json.loads(metadata.read_text()) if metadata.is_file() else wanted
    check(found == wanted, "data.root", str(root), f"a folder without shapes written with other settings "
          f"({found}, not {wanted}): delete it or choose another data.root")


def remove_stale_scratch(root: Path) -> None:
    """Delete the scratch folders of this host's writers that were killed outright (SIGKILL), not of live ones."""
    host = socket.gethostname()
    for scratch in root.glob(f"{SCRATCH_PREFIX}{host}-*"):
        pid = scratch.name[len(SCRATCH_PREFIX) + len(host) + 1:].partition("-")[0]
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(scratch, ignore_errors=True)
        except (PermissionError, ValueError):  # another user's live process; a name without a pid
            pass


class WritesShapes:
    """Mixed in before a real data module: writes the scenes on first use; `fixed`: settings the files decide."""

    root: Path
    fixed: ClassVar[dict[str, Any]] = {"year": "2012", "download": False}  # VOC 2012's layout, never downloaded

    def __init__(self, train_images: PositiveInt, val_images: PositiveInt, image_size: PositiveInt,
                 generator_seed: int, **kwargs: Any):
        self.generator = {"splits": {"train": train_images, "val": val_images}, "image_size": image_size,
                          "seed": generator_seed}
        settings = {**kwargs, **self.fixed}
        for key in self.fixed:
            check(key not in kwargs, f"data.{key}", kwargs.get(key), f"no setting of data={settings['name']}, "
                  f"whose files are the generator's")
        check(settings["num_classes"] == NUM_CLASSES, "data.num_classes", settings["num_classes"],
              f"{NUM_CLASSES} for data={settings['name']} (background + {', '.join(CLASSES)})")
        super().__init__(**settings)
        self.class_names = ["background", *CLASSES]

    def prepare_data(self) -> None:
        ensure_shapes_dataset(self.root, **self.generator)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # cheap when written; lets setup() alone (evaluation, tests) work on a fresh root
        super().setup(stage)  # type: ignore[misc]


class ShapesDataModule(WritesShapes, VOCSegmentationDataModule):
    """The shapes scenes, read exactly as real VOC segmentation is."""


class ShapesDetectionDataModule(WritesShapes, VOCDetectionDataModule):
    """The shapes scenes' detection XML (VOC 2012 layout, ImageSets/Main lists), read as real VOC detection is."""

    fixed: ClassVar[dict[str, Any]] = {**WritesShapes.fixed, "class_names": CLASSES}


class ShapesCOCODataModule(WritesShapes, COCODetectionDataModule):
    """The shapes scenes' COCO JSON (annotations/instances_<split>.json over VOC's JPEGImages), read as COCO is."""

    fixed: ClassVar[dict[str, Any]] = {
        "train_images": str(VOC_FOLDER / "JPEGImages"), "train_annotations": "annotations/instances_train.json",
        "val_images": str(VOC_FOLDER / "JPEGImages"), "val_annotations": "annotations/instances_val.json",
        "test_images": None, "test_annotations": None}
