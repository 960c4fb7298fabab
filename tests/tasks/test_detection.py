"""task=detection (c3exp/tasks/detection.py) end to end on the shapes scenes: the metric, results, both file
layouts, resume, eval, and the paper's experiment and report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchmetrics import MetricCollection

import c3exp
from c3exp.cli.eval import evaluate
from c3exp.cli.report import main as report
from c3exp.tasks import DetectionModule, build_network
from c3exp.tasks.detection import detection_metrics
from c3exp.training.train import train
from c3exp.utils.complexity import model_complexity
from tests.conftest import run_config, run_main, without_timing


def tiny(root: Path, data: str = "shapes_detection") -> list[str]:
    """The shapes detection experiment shrunk: 16 + 8 scenes, 2 training batches an epoch."""
    return ["experiment=detection_shapes", f"data={data}", f"data.root={root}", "data.train_images=16",
            "data.val_images=8", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def straight(shapes_root, tmp_path_factory) -> dict:
    return train(run_config(tiny(shapes_root) + ["attn=c3", "trainer.max_epochs=2", "+optim.scheduler.total_steps=4"],
                            tmp_path_factory.mktemp("straight")))


# -- the metric ---------------------------------------------------------------------------------------


def target(boxes, labels, iscrowd=None) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "iscrowd": torch.tensor(iscrowd or [0] * len(labels))}


def prediction(boxes, scores, labels) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_average_precision_equals_the_hand_computed_value():
    """Circles: 3 objects (+ a crowd one); by score, a hit, a miss, a hit: P/R = 1/(1/3), 1/2(1/3), 2/3(2/3).

    COCO's 101 recall points: precision 1 up to recall 0.33 (34 points), 2/3 from 0.34 to 0.66 (33
    points), 0 above: AP = (34 + 33 * 2/3) / 101 = 56/101 at every IoU threshold (the hits are exact,
    the miss overlaps nothing). The top-scored detection lies on the crowd object: ignored, not a
    false positive. Squares: one object, found exactly: AP 1. The mean over the classes: mAP.
    """
    a1, a2, b1, crowd, square = [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15], [30, 30, 40, 40], [40, 0, 50, 10]
    metric = MetricCollection(detection_metrics(["background", "circle", "square"]))
    metric.update(
        [prediction([a1, square], [0.9, 0.6], [1, 2]), prediction([[40, 40, 50, 50], b1, crowd], [0.8, 0.7, 0.95], [1, 1, 1])],
        [target([a1, a2, square], [1, 1, 2]), target([b1, crowd], [1, 1], [0, 1])],
    )
    result = {key: float(value) for key, value in metric.compute().items()}
    circle = 56 / 101
    assert result["ap50_circle"] == pytest.approx(circle) and result["ap_circle"] == pytest.approx(circle)
    assert result["ap50_square"] == pytest.approx(1.0)
    assert result["map_50"] == pytest.approx((circle + 1) / 2) and result["map"] == pytest.approx((circle + 1) / 2)
    assert set(result) == {"map", "map_50", "map_75", "ap_circle", "ap50_circle", "ap_square", "ap50_square"}


@pytest.mark.parametrize("option", ["task.label_smoothing=0.1", "task.tta_flip=true"])
def test_the_classification_recipe_options_are_no_keys_of_detection(option, monkeypatch, capsys):
    """The detector has no such loss or flip averaging: `python -m c3exp` says so in one line, before any work."""
    code, err = run_main(monkeypatch, capsys, ["task=detection", "data=shapes_detection", option])
    key = option.partition("=")[0]
    assert code == 2 and err.startswith(f"error: {key} is not a config key or group ({option})") and err.count("\n") == 1


def test_the_detection_module_declares_map_metrics():
    assert DetectionModule.metric_modes == {"map": "max", "map_50": "max", "map_75": "max"}
    assert c3exp.compose(["task=detection", "data=voc2007"]).task.primary_metric.name == "val/map_50"
    assert c3exp.compose(["task=detection", "data=coco2017"]).task.primary_metric.name == "val/map"


# -- runs ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_detection_run_writes_map_and_per_class_ap(straight, shapes_root):
    assert (shapes_root / "VOCdevkit" / "VOC2012" / "Annotations" / "train_00000.xml").is_file()
    on_disk = json.loads((Path(straight["run_dir"]) / "results.json").read_text())
    assert on_disk["task"] == "detection" and on_disk["primary_metric"] == {"name": "val/map_50", "mode": "max"}
    history = on_disk["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert on_disk["best_val_map_50"] == max(row["val/map_50"] for row in history)
    assert {"train/loss", "train/loss_classifier", "train/loss_objectness", "val/map"} <= history[-1].keys()
    assert "val/loss" not in history[-1]  # the detector gives no loss in eval mode
    per_class = {key for key in on_disk if key.startswith("test_ap50_")}
    assert per_class and per_class <= {"test_ap50_circle", "test_ap50_square", "test_ap50_triangle"}
    assert {"test_map", "test_map_50", "test_map_75"} <= on_disk.keys()
    cfg = c3exp.compose(tiny(shapes_root) + ["attn=c3"])  # the run's network: its size, MACs of backbone and FPN
    assert {key: on_disk[key] for key in ("params", "macs")} == model_complexity(build_network(cfg), cfg.data)


@pytest.mark.slow
def test_the_coco_layout_trains_exactly_as_the_voc_layout(shapes_root, tmp_path):
    """The same scenes read from COCO JSON instead of VOC XML: the same batches, so the same run, to the bit."""
    args = ["attn=none", "trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    voc = train(run_config(tiny(shapes_root) + args, tmp_path / "voc"))
    coco = train(run_config(tiny(shapes_root, "shapes_coco") + args, tmp_path / "coco"))
    assert coco["primary_metric"] == {"name": "val/map", "mode": "max"}  # COCO's headline figure
    assert without_timing(coco["history"]) == without_timing(voc["history"])
    assert coco["test_map"] == voc["test_map"]


@pytest.mark.slow
def test_resuming_a_detection_run_equals_the_uninterrupted_run(straight, shapes_root, tmp_path):
    args = tiny(shapes_root) + ["attn=c3", "+optim.scheduler.total_steps=4"]  # the first leg's schedule is the whole run's
    first = train(run_config(args + ["trainer.max_epochs=1"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=2", f"ckpt_path={first['checkpoints']['last']}"],
                               tmp_path / "legs"))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    assert resumed["test_map_50"] == straight["test_map_50"]


def test_eval_reproduces_the_test_map(straight, shapes_root):
    metrics = evaluate(straight["checkpoints"]["best"], [f"data.root={shapes_root}"])  # data.root is never the checkpoint's
    assert metrics["test/map_50"] == pytest.approx(straight["test_map_50"], abs=1e-6)
    assert metrics["test/map"] == pytest.approx(straight["test_map"], abs=1e-6)


# -- the paper's experiment -------------------------------------------------------------------------


@pytest.mark.slow  # the whole experiment: 12 epochs of 300 scenes, about 5 minutes on 2 cores
def test_the_shapes_experiment_reaches_map50_of_one_half_and_eval_reproduces_it(shapes_root, tmp_path):
    results = train(run_config(["experiment=detection_shapes", "attn=c3", f"data.root={tmp_path / 'full'}",
                                "trainer.enable_progress_bar=false"], tmp_path / "run"))
    assert results["test_map_50"] >= 0.5
    # the run tested its last weights (test_ckpt=last); the best epoch need not be the last
    metrics = evaluate(results["checkpoints"]["last"], [f"data.root={tmp_path / 'full'}"])
    assert metrics["test/map_50"] == pytest.approx(results["test_map_50"], abs=1e-6)


@pytest.mark.slow  # three training subprocesses
def test_a_multirun_over_attention_turns_into_the_table3_report(shapes_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*tiny(shapes_root), "trainer.max_epochs=1", "trainer.limit_train_batches=1", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run([sys.executable, "-m", "c3exp", "-m", "attn=none,se,c3", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    written = report([str(sweep), f"out={tmp_path / 'report'}"])
    markdown = Path(written["markdown"]).read_text()
    section = markdown.split("## Detection (Table 3 right layout)\n", 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    assert all(f"{attn} mAP@0.5 (%)" in header for attn in ("none", "se", "c3"))
    assert "| resnet20 | shapes_detection |" in section
