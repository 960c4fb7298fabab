"""VOC segmentation data (c3exp/data/voc.py) through torchvision's VOCSegmentation, on files in the VOC layout
written here."""
from __future__ import annotations

import urllib.error
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from c3exp.data.shapes import VOC_FOLDER, Scene, Shape, regular_polygon, render, voc_palette, write_shapes_dataset
from c3exp.data.voc import VOC_CLASSES, VOCSegmentationDataModule
from c3exp.errors import ConfigError, DataNotFoundError
from c3exp.schema import check_settings
from tests.data import data_config, data_module


def voc(root: Path, **kwargs) -> VOCSegmentationDataModule:
    settings = {"name": "shapes", "num_classes": 4, "crop_size": 32, "batch_size": 4, "num_workers": 0, **kwargs}
    return data_module("voc2012", root=str(root), **settings)


@pytest.fixture
def shapes_root(tmp_path: Path) -> Path:
    return write_shapes_dataset(tmp_path, {"train": 8, "val": 5}, image_size=48, seed=0)


def folder(root: Path) -> Path:
    return root / VOC_FOLDER


def write_sample(root: Path, name: str, image: Image.Image, mask: Image.Image, split: str = "train",
                 mask_dir: str = "SegmentationClass") -> None:
    """Add one image and mask to the VOC layout under `root` and append its id to ImageSets/Segmentation/<split>.txt."""
    voc = folder(root)
    for sub in ("JPEGImages", mask_dir, "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    image.save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
    mask.save(voc / mask_dir / f"{name}.png")
    with open(voc / "ImageSets" / "Segmentation" / f"{split}.txt", "a") as listing:
        listing.write(f"{name}\n")


def palette_mask(labels: np.ndarray) -> Image.Image:
    mask = Image.fromarray(labels.astype(np.uint8), mode="P")
    mask.putpalette(voc_palette())
    return mask


def test_batches_have_the_task_s_shapes_and_types(shapes_root):
    data = voc(shapes_root, eval_batch_size=5)
    data.setup()
    images, masks = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.int64
    assert type(images) is torch.Tensor and type(masks) is torch.Tensor  # no tv_tensors leak into the task
    images, masks = next(iter(data.val_dataloader()))
    assert images.shape == (5, 3, 48, 48) and masks.shape == (5, 48, 48)
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3, 255}
    assert data.num_classes == 4 and data.ignore_index == 255 and len(data.class_names) == 4
    assert voc(shapes_root, num_classes=21).class_names == list(VOC_CLASSES)


def test_evaluation_reads_back_the_written_labels_and_pixels(shapes_root):
    data = voc(shapes_root)
    val = data.dataset("val")
    for index, name in enumerate(["val_00000", "val_00003"]):
        image, mask = val[[0, 3][index]]
        written = np.array(Image.open(folder(shapes_root) / "SegmentationClass" / f"{name}.png"))
        assert torch.equal(mask, torch.from_numpy(written).long())
        pixels = torch.from_numpy(np.asarray(Image.open(folder(shapes_root) / "JPEGImages" / f"{name}.jpg")).copy())
        mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
        expected = (pixels.permute(2, 0, 1).float() / 255 - mean) / std
        torch.testing.assert_close(image, expected)


def test_short_images_are_padded_with_the_mean_colour_and_ignored_labels(shapes_root):
    data = voc(shapes_root, crop_size=80, scale_range=(1.0, 1.0))
    image, mask = data.dataset("train")[0]
    assert image.shape == (3, 80, 80) and mask.shape == (80, 80)
    padded = (mask == 255) & (image.abs() < 0.03).all(dim=0)  # the mean colour normalises to ~0
    assert padded.sum() >= 80 * 80 - 48 * 48
    assert (mask != 255).sum() <= 48 * 48


def test_evaluation_batches_pad_images_of_different_sizes(tmp_path):
    write_sample(tmp_path, "wide", Image.new("RGB", (48, 30), "white"), palette_mask(np.ones((30, 48))), split="val")
    write_sample(tmp_path, "tall", Image.new("RGB", (36, 40), "white"), palette_mask(np.full((40, 36), 2)), split="val")
    images, masks = next(iter(voc(tmp_path).val_dataloader()))
    assert images.shape == (2, 3, 40, 48) and masks.shape == (2, 40, 48)
    assert masks[0, :30].eq(1).all() and masks[0, 30:].eq(255).all() and images[0, :, 30:].eq(0).all()
    assert masks[1, :, :36].eq(2).all() and masks[1, :, 36:].eq(255).all() and images[1, :, :, 36:].eq(0).all()
    assert images[0, :, :30].gt(1).all()  # white, normalised


COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def colour_coded_scene(seed: int, size: int = 48) -> Scene:
    """Shapes whose colour is their class (red, green, blue) on black: the image says where each label belongs."""
    rng = np.random.default_rng(seed)
    shapes = []
    for label in (1, 2, 3):
        centre = tuple(rng.uniform(10, size - 10, size=2))
        polygon = regular_polygon(("circle", "square", "triangle")[label - 1], centre, 8, rng.uniform(0, 6))
        shapes.append(Shape(label, polygon, COLOURS[label]))
    return Scene(np.zeros((size, size, 3), np.uint8), tuple(shapes), noise=0.0)


def test_image_and_mask_stay_aligned_under_scaling_cropping_and_flipping(tmp_path):
    for index in range(3):
        rendered = render(colour_coded_scene(index))
        write_sample(tmp_path, f"scene{index}", rendered.image, rendered.mask)
    data = voc(tmp_path, crop_size=40, scale_range=(0.6, 1.7), mean=(0, 0, 0), std=(1, 1, 1))
    dataset = data.dataset("train")
    torch.manual_seed(0)
    agree = total = 0
    for _ in range(12):
        for index in range(len(dataset)):
            image, mask = dataset[index]
            labelled = mask != 255
            brightest = image.max(dim=0)  # the label the pixel's colour says: 0 on black, else 1 + its channel
            expected = torch.where(brightest.values > 0.5, brightest.indices + 1, 0)
            agree += int((expected == mask)[labelled].sum())
            total += int(labelled.sum())
    assert agree / total > 0.98


def test_training_samples_repeat_under_the_same_seed(shapes_root):
    data = voc(shapes_root)
    batches = []
    for _ in range(2):
        torch.manual_seed(7)
        batches.append(next(iter(data.train_dataloader())))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_worker_processes_load_the_same_batches_shape(shapes_root):
    images, masks = next(iter(voc(shapes_root, num_workers=1).val_dataloader()))
    assert images.shape == (4, 3, 48, 48) and masks.dtype == torch.int64


def test_no_augmentation_trains_on_full_images(shapes_root):
    images, masks = next(iter(voc(shapes_root, augment=False).train_dataloader()))
    assert images.shape == (4, 3, 48, 48) and masks.shape == (4, 48, 48)


# -- bad input: one line each, naming the setting and the file ---------------------------------------


def test_a_label_beyond_num_classes_names_the_mask_and_labels(shapes_root):
    labels = np.zeros((48, 48), np.uint8)
    labels[:5, :5], labels[10:12, 10:12] = 7, 255
    write_sample(shapes_root, "bad", Image.new("RGB", (48, 48)), palette_mask(labels), split="val")
    dataset = voc(shapes_root).dataset("val")
    with pytest.raises(ConfigError) as err:
        dataset[len(dataset) - 1]
    assert err.value.key == "data.num_classes" and "bad.png" in str(err.value) and "[7]" in str(err.value)
    assert "\n" not in str(err.value)
    voc(shapes_root, check_masks=False).dataset("val")[len(dataset) - 1]  # checks off: loads


def test_image_and_mask_sizes_must_agree(shapes_root):
    write_sample(shapes_root, "odd", Image.new("RGB", (48, 40)), palette_mask(np.zeros((48, 48))), split="val")
    dataset = voc(shapes_root).dataset("val")
    with pytest.raises(DataNotFoundError) as err:
        dataset[len(dataset) - 1]
    message = str(err.value)
    assert "odd.png" in message and "odd.jpg" in message and "48x48" in message and "48x40" in message
    assert "data.root" in message and "\n" not in message


def test_a_colour_mask_is_refused(shapes_root):
    write_sample(shapes_root, "rgb", Image.new("RGB", (48, 48)), Image.new("RGB", (48, 48)), split="val")
    dataset = voc(shapes_root).dataset("val")
    with pytest.raises(DataNotFoundError, match="rgb.png is a RGB image"):
        dataset[len(dataset) - 1]


def test_a_list_naming_a_missing_file_fails_at_setup(shapes_root):
    with open(folder(shapes_root) / "ImageSets" / "Segmentation" / "val.txt", "a") as listing:
        listing.write("ghost\n")
    with pytest.raises(DataNotFoundError) as err:
        voc(shapes_root).setup("validate")
    message = str(err.value)
    assert "val.txt" in message and "'ghost'" in message and "ghost.jpg" in message and "\n" not in message


def test_a_crop_larger_than_the_unpadded_image_names_crop_size(shapes_root):
    data = voc(shapes_root, crop_size=56, scale_range=(1.0, 1.0), pad_to_crop=False)
    with pytest.raises(ConfigError) as err:
        data.dataset("train")[0]
    assert err.value.key == "data.crop_size" and "48x48" in str(err.value) and "data.pad_to_crop" in str(err.value)
    image, _ = voc(shapes_root, crop_size=40, pad_to_crop=False, scale_range=(1.0, 1.0)).dataset("train")[0]
    assert image.shape == (3, 40, 40)


def test_an_unknown_split_lists_the_lists_found(shapes_root):
    with pytest.raises(ConfigError) as err:
        voc(shapes_root, train_split="training").setup("fit")
    assert err.value.key == "data.train_split" and "found: train, val" in str(err.value)


def test_missing_voc_is_one_paragraph_naming_data_root(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        voc(tmp_path / "nowhere").setup()
    message = str(err.value)
    assert str((tmp_path / "nowhere" / "VOCdevkit" / "VOC2012").resolve()) in message
    assert "data.root" in message and "data=shapes" in message and "data=voc2012" in message and "\n" not in message


def test_offline_download_failure_is_the_same_paragraph(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.voc.download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError, match="download failed.*data.root"):
        voc(tmp_path, download=True).prepare_data()


def test_the_global_batch_is_divided_over_processes(shapes_root):
    data = voc(shapes_root, batch_size=6, eval_batch_size=4)
    data.trainer = SimpleNamespace(world_size=2)
    assert data.per_process_batch_size("train") == 3 and data.per_process_batch_size("val") == 2
    data.trainer = SimpleNamespace(world_size=4)
    with pytest.raises(ConfigError, match="data.batch_size=6"):
        data.train_dataloader()


@pytest.mark.parametrize("setting", [
    {"crop_size": 0}, {"scale_range": [2.0, 1.0]}, {"ignore_index": 2}, {"num_classes": 300}, {"year": "2020"},
    {"batch_size": 0}, {"std": [0, 1, 1]},
])
def test_bad_settings_are_refused_up_front(tmp_path, setting):
    """By the schema (c3exp.schema) or, for rules spanning settings, by the constructor."""
    with pytest.raises(ConfigError, match=f"data.{next(iter(setting))}="):
        check_settings(setting, VOCSegmentationDataModule, "data.")
        voc(tmp_path, **setting)


def test_train_aug_reads_its_list_and_the_sbd_masks(shapes_root):
    voc_folder = folder(shapes_root)
    names = ["train_00001", "val_00002", "train_00004"]
    (voc_folder / "SegmentationClassAug").mkdir()
    for name in names:  # SBD's masks are plain greyscale PNGs of labels, here different from VOC's
        labels = np.asarray(Image.open(voc_folder / "SegmentationClass" / f"{name}.png"))
        Image.fromarray(np.where(labels == 255, 0, labels).astype(np.uint8), mode="L").save(
            voc_folder / "SegmentationClassAug" / f"{name}.png")
    (voc_folder / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("".join(f"{n}\n" for n in names))
    data = voc(shapes_root, train_split="train_aug", augment=False)
    data.setup("fit")
    train = data.dataset("train")
    assert len(train) == 3 and [Path(p).stem for p in train.voc.masks] == names
    for index, name in enumerate(names):
        _, mask = train[index]
        expected = np.array(Image.open(voc_folder / "SegmentationClassAug" / f"{name}.png"))
        assert torch.equal(mask, torch.from_numpy(expected).long()) and 255 not in mask


def test_the_voc2012_config_builds_the_data_module(tmp_path):
    assert data_config("voc2012")._target_ == "c3exp.data.VOCSegmentationDataModule"
    data = data_module("voc2012", root=str(tmp_path))
    assert data.num_classes == 21 and data.crop_size == 321 and data.batch_size == 10
    assert data.class_names == list(VOC_CLASSES)
