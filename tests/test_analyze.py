"""`python -m c3exp.analyze boxes`: ground truth and two detectors' boxes side by side, and its one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from c3exp.analyze import main as analyze
from c3exp.train import train
from tests.conftest import TINY_DIGITS, error_line, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_detection(root: Path, attn: str) -> list[str]:
    """The shapes detection experiment shrunk: 16 + 8 scenes, one epoch of 2 training batches."""
    return ["experiment=detection_shapes", f"data.root={root}", "data.train_images=16", "data.val_images=8",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", f"attn={attn}"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """ResNet-20 Faster R-CNN without and with C3, trained once for the module: attn -> last checkpoint."""
    root, runs = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("detection_runs")
    return {attn: train(run_config(tiny_detection(root, attn), runs / attn))["checkpoints"]["last"]
            for attn in ("none", "c3")}


def test_boxes_draws_one_row_of_three_panels_per_image(checkpoints, tmp_path, capsys):
    sizes = {}
    for images in (1, 2):
        png = tmp_path / f"boxes{images}.png"
        out = analyze(["boxes", checkpoints["none"], checkpoints["c3"], "--images", str(images), "--score", "0",
                       "--out", str(png)])
        assert out == png and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            sizes[images] = image.size
    printed = capsys.readouterr().out
    assert "ground truth: boxes per image" in printed
    assert "baseline: resnet20 + none" in printed and "C3: resnet20 + c3" in printed
    (width, one_row), (same_width, two_rows) = sizes[1], sizes[2]
    assert same_width == width and width >= 3 * 150  # three panels side by side, whatever the rows
    assert 150 <= two_rows - one_row <= 300 and two_rows < 2 * one_row + 100  # one more row of panels per image


def test_boxes_defaults_to_the_checkpoints_common_parent(checkpoints, capsys):
    out = analyze(["boxes", checkpoints["none"], checkpoints["c3"], "--images", "1"])
    assert out.name == "boxes_compare.png" and out.is_file()
    assert out.parent == Path(checkpoints["none"]).resolve().parents[2]  # <runs>/<attn>/checkpoints/last.ckpt


@pytest.fixture(scope="module")
def classification_checkpoint(tmp_path_factory) -> str:
    overrides = TINY_DIGITS + ["model=resnet20", "attn=none", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    return train(run_config(overrides, tmp_path_factory.mktemp("classification")))["checkpoints"]["last"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--images", "9"], "--images=9 is not valid: expected 1..8 (the test images of shapes_detection)"),
        (["--score", "1.5"], "--score=1.5 is not valid: expected a detection score in [0, 1]"),
        (["--score", "-0.1"], "--score=-0.1 is not valid"),
        (["--score", "high"], "invalid float value: 'high'"),
        (["--images", "0"], "'0' is not valid: expected an integer >= 1"),
    ],
)
def test_bad_options_are_one_error_line(checkpoints, extra, message, capsys):
    err = error_line(lambda: analyze(["boxes", checkpoints["none"], checkpoints["c3"], *extra]), capsys)
    assert message in err


def test_a_classification_checkpoint_is_one_error_line(checkpoints, classification_checkpoint, capsys):
    err = error_line(lambda: analyze(["boxes", checkpoints["none"], classification_checkpoint]), capsys)
    assert "c3 checkpoint=" in err and "expected a detection checkpoint (task=detection), not task=classification" in err
    err = error_line(lambda: analyze(["boxes", classification_checkpoint, checkpoints["c3"]]), capsys)
    assert "baseline checkpoint=" in err and "a detection checkpoint (task=detection)" in err


def test_cam_and_correlation_refuse_a_detection_checkpoint_in_one_line(checkpoints, capsys):
    err = error_line(lambda: analyze(["cam", checkpoints["none"], checkpoints["c3"]]), capsys)
    assert "expected a classification checkpoint (task=classification), not task=detection" in err
    err = error_line(lambda: analyze(["correlation", f"ckpt_path={checkpoints['c3']}"]), capsys)
    assert "expected a classification checkpoint (task=classification), not task=detection" in err
