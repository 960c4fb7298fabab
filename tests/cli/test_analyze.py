"""`c3exp analyze` (c3exp/cli/analyze.py): correlation, correlation-compare, cam and boxes from real
checkpoints and runs, and their one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from c3exp.cli.analyze import main as analyze
from c3exp.training.train import train
from tests.conftest import ANALYSIS_RUN, TINY_DIGITS, assert_names_bad_setting, error_line, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def pair(runs: dict) -> list[str]:
    """baseline=... c3=...: the last checkpoints of the none and c3 runs (trained_runs' results or checkpoint paths)."""
    none, c3 = (runs[attn]["checkpoints"]["last"] if isinstance(runs[attn], dict) else runs[attn] for attn in ("none", "c3"))
    return [f"baseline={none}", f"c3={c3}"]


# -- correlation, correlation-compare and cam, on the runs of tests/conftest.py's trained_runs ---------------


def test_correlation_command_writes_matrices_heatmaps_and_prints_stages(trained_runs, tmp_path, capsys):
    ckpt = trained_runs["c3"]["checkpoints"]["last"]
    correlations = analyze(["correlation", f"ckpt_path={ckpt}", "batches=1", f"out={tmp_path}"])
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "correlation.json").read_text())
    with np.load(tmp_path / "correlation.npz") as stored:
        for c, stage in zip(correlations, summary["stages"]):
            np.testing.assert_array_equal(stored[f"stage{c.stage}"], c.matrix)
            assert stage["mean_abs_corr"] == pytest.approx(c.mean_abs)
            assert f"stage {c.stage}: mean |corr| = {c.mean_abs:.4f}" in printed
            assert (tmp_path / f"stage{c.stage}.png").stat().st_size > 5_000


def test_correlation_compare_and_cam_commands_draw_their_figures(trained_runs, tmp_path):
    runs = {attn: Path(results["run_dir"]) for attn, results in trained_runs.items()}
    compare = analyze(["correlation-compare", f"baseline={runs['none']}", f"c3={runs['c3']}",
                       f"out={tmp_path / 'fig4.png'}"])
    ckpts = pair(trained_runs)
    cam = analyze(["cam", *ckpts, "images=2", "topk=3", f"out={tmp_path / 'fig6.png'}"])
    for figure in (compare, cam):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("argv", "key", "value", "specific"),
    [
        (["cam", "baseline=a.ckpt", "c3=b.ckpt", "topk=0"], "topk", 0, None),
        (["cam", "baseline=a.ckpt", "c3=b.ckpt", "--topk", "3"], "argument", "--topk", "one of the options"),
        (["correlation", "ckpt_path=missing.ckpt"], "ckpt_path", "missing.ckpt", None),
        (["correlation", "data.root=/x"], "ckpt_path", None, "ckpt_path=PATH"),
        (["correlation-compare", "baseline=.", "c3=."], "run_dir", ".", None),
        (["colour"], "analysis", "colour", "correlation, correlation-compare, cam, boxes"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(argv, key, value, specific, capsys):
    line = error_line(lambda: analyze(argv), capsys)
    assert_names_bad_setting(line, key, value)
    assert specific is None or specific in line


def test_cam_topk_beyond_the_channels_is_a_user_error(trained_runs, capsys):
    err = error_line(lambda: analyze(["cam", *pair(trained_runs), "topk=65", "images=1"]), capsys)
    assert_names_bad_setting(err, "topk", 65)
    assert "at most the 64 channels" in err


@pytest.mark.parametrize("split", ["test", "val"])
def test_cam_images_beyond_the_split_is_a_user_error(trained_runs, split, capsys):
    """More images than the split holds used to build a figure of the whole split: 11 minutes, 2.9 GB."""
    err = error_line(lambda: analyze(["cam", *pair(trained_runs), "images=100000", f"split={split}"]), capsys)
    available = {"test": 359, "val": 180}[split]
    assert_names_bad_setting(err, "images", 100000)
    assert f"1..{available} (the {split} images of digits)" in err


@pytest.mark.slow
def test_module_entry_point_reports_errors_in_one_line():
    done = subprocess.run([sys.executable, "-m", "c3exp.analyze", "cam", "baseline=x.ckpt", "c3=y.ckpt"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert_names_bad_setting(done.stderr, "ckpt_path", "x.ckpt")
    assert "an existing checkpoint file" in done.stderr


def test_correlation_command_reads_a_checkpoint_trained_with_data_on_device(tmp_path, capsys):
    """data.on_device's loader (DeviceBatches) has no `.dataset`: the images used are counted as they are read."""
    overrides = [item for item in ANALYSIS_RUN if not item.startswith("callbacks")] + [
        "attn=c3", "data.on_device=true", "trainer.max_epochs=1"]
    ckpt = train(run_config(overrides, tmp_path / "run"))["checkpoints"]["last"]
    for batches, images in (("2", 16), ("1000", 180)):  # 180: the whole digits val split, fewer than 1000 batches of 8
        out = tmp_path / f"out{batches}"
        correlations = analyze(["correlation", f"ckpt_path={ckpt}", f"batches={batches}", f"out={out}"])
        summary = json.loads((out / "correlation.json").read_text())
        assert summary["images"] == images and len(summary["stages"]) == len(correlations) == 3
        assert f"({images} val images)" in capsys.readouterr().out


def test_a_checkpoint_whose_weights_do_not_fit_is_one_line(trained_runs, tmp_path, capsys):
    checkpoint = torch.load(trained_runs["c3"]["checkpoints"]["last"], map_location="cpu", weights_only=False)
    del checkpoint["state_dict"]["net.head.2.weight"]
    damaged = tmp_path / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    err = error_line(lambda: analyze(["correlation", f"ckpt_path={damaged}", "batches=1"]), capsys)
    assert "a checkpoint whose weights fit the model of its config" in err and "head.2.weight" in err


# -- boxes: ground truth and two detectors' boxes side by side --------------------------------------------


def tiny_detection(root: Path, attn: str) -> list[str]:
    """The shapes detection experiment shrunk: 16 + 8 scenes, one epoch of 2 training batches."""
    return ["experiment=detection_shapes", f"data.root={root}", "data.train_images=16", "data.val_images=8",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", f"attn={attn}"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """ResNet-20 Faster R-CNN without and with C3, trained once for the module: attn -> last checkpoint."""
    root, runs = tmp_path_factory.mktemp("shapes"), tmp_path_factory.mktemp("detection_runs")
    trained = {attn: train(run_config(tiny_detection(root, attn), runs / attn)) for attn in ("none", "c3")}
    return {**{attn: results["checkpoints"]["last"] for attn, results in trained.items()}, "root": str(root)}


@pytest.mark.slow
def test_boxes_draws_one_row_of_three_panels_per_image(checkpoints, tmp_path, capsys):
    sizes = {}
    for images in (1, 2):
        png = tmp_path / f"boxes{images}.png"
        out = analyze(["boxes", *pair(checkpoints), f"images={images}", "score=0", f"out={png}",
                       f"data_root={checkpoints['root']}"])
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
    out = analyze(["boxes", *pair(checkpoints), "images=1", f"data_root={checkpoints['root']}"])
    assert out.name == "boxes_compare.png" and out.is_file()
    assert out.parent == Path(checkpoints["none"]).resolve().parents[2]  # <runs>/<attn>/checkpoints/last.ckpt


@pytest.fixture(scope="module")
def classification_checkpoint(tmp_path_factory) -> str:
    overrides = TINY_DIGITS + ["model=resnet20", "attn=none", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    return train(run_config(overrides, tmp_path_factory.mktemp("classification")))["checkpoints"]["last"]


@pytest.mark.parametrize(
    ("extra", "key", "value", "specific"),
    [
        (["images=9"], "images", 9, "1..8 (the test images of shapes_detection)"),
        (["score=1.5"], "score", 1.5, None),
        (["score=-0.1"], "score", -0.1, None),
        (["score=high"], "score", "high", None),
        (["images=0"], "images", 0, None),
    ],
)
def test_bad_options_are_one_error_line(checkpoints, extra, key, value, specific, capsys):
    err = error_line(lambda: analyze(["boxes", *pair(checkpoints), *extra, f"data_root={checkpoints['root']}"]), capsys)
    assert_names_bad_setting(err, key, value)
    assert specific is None or specific in err


def test_a_classification_checkpoint_is_one_error_line(checkpoints, classification_checkpoint, capsys):
    err = error_line(lambda: analyze(["boxes", f"baseline={checkpoints['none']}", f"c3={classification_checkpoint}",
                                      f"data_root={checkpoints['root']}"]), capsys)
    assert_names_bad_setting(err, "c3", classification_checkpoint)
    assert "a detection checkpoint (task=detection), not task=classification" in err
    err = error_line(lambda: analyze(["boxes", f"baseline={classification_checkpoint}", f"c3={checkpoints['c3']}",
                                      f"data_root={checkpoints['root']}"]), capsys)
    assert_names_bad_setting(err, "baseline", classification_checkpoint)
    assert "a detection checkpoint (task=detection)" in err


def test_cam_and_correlation_refuse_a_detection_checkpoint_in_one_line(checkpoints, capsys):
    err = error_line(lambda: analyze(["cam", *pair(checkpoints), f"data_root={checkpoints['root']}"]), capsys)
    assert_names_bad_setting(err, "baseline", checkpoints["none"])
    assert "a classification checkpoint (task=classification), not task=detection" in err
    err = error_line(lambda: analyze(["correlation", f"ckpt_path={checkpoints['c3']}", f"data.root={checkpoints['root']}"]),
                     capsys)
    assert_names_bad_setting(err, "ckpt_path", checkpoints["c3"])
    assert "a classification checkpoint (task=classification), not task=detection" in err
