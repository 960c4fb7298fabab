"""task=detection end to end on the shapes scenes: the network, the metric, results, both file layouts, resume, eval, bench, report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

import c3exp
from c3exp.bench import bench
from c3exp.errors import ConfigError
from c3exp.eval import evaluate
from c3exp.report import main as report
from c3exp.tasks import DetectionModule, build_network
from c3exp.tasks.detection import DetectionAP
from c3exp.train import train
from tests.conftest import run_config

TIMING = {"train/epoch_time", "train/images_per_sec"}


def tiny(root: Path, data: str = "shapes_detection") -> list[str]:
    """The shapes detection experiment shrunk: 16 + 8 scenes, 2 training batches an epoch."""
    return ["experiment=detection_shapes", f"data={data}", f"data.root={root}", "data.train_images=16",
            "data.val_images=8", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shapes")


@pytest.fixture(scope="module")
def straight(shapes_root, tmp_path_factory) -> dict:
    return train(run_config(tiny(shapes_root) + ["attn=c3", "trainer.max_epochs=2", "+optim.scheduler.total_steps=4"],
                            tmp_path_factory.mktemp("straight")))


def without_timing(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMING} for row in history]


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
    metric = DetectionAP(class_names=["background", "circle", "square"])
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


# -- the network ----------------------------------------------------------------------------------------
def detector(*overrides: str):
    return build_network(c3exp.compose(["task=detection", "data=shapes_detection", "model=resnet20", *overrides]))


def test_the_pyramid_has_one_anchor_size_per_level_from_the_strides():
    net = detector("task.network.fpn_channels=16", "task.network.representation_size=32")
    assert net.backbone.strides() == [1, 2, 4, 8]  # CIFAR ResNet stages at strides 1, 2, 4 and the extra pool level
    assert net.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))
    two = detector("task.network.stages=[1,2]", "task.network.anchor_sizes=[12,24,48]", "task.network.fpn_channels=16")
    assert two.backbone.strides() == [2, 4, 8] and two.rpn.anchor_generator.sizes == ((12,), (24,), (48,))
    with pytest.raises(ConfigError, match="task.network.anchor_sizes.*3 positive sizes"):
        detector("task.network.stages=[1,2]", "task.network.anchor_sizes=[12,24]")


def test_trainable_stages_and_frozen_bn_spare_the_attention_blocks():
    net = detector("attn=se", "task.network.trainable_stages=1", "task.network.frozen_bn=true")
    body = net.backbone.body
    frozen = [body.stem, body.stages[0], body.stages[1]]
    attention = {id(p) for m in body.modules() if getattr(m, "is_attention", False) for p in m.parameters()}
    assert attention and all(p.requires_grad for m in body.modules() if getattr(m, "is_attention", False)
                             for p in m.parameters())
    assert not any(p.requires_grad for part in frozen for p in part.parameters() if id(p) not in attention)
    assert all(p.requires_grad for p in body.stages[2].parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    with pytest.raises(ConfigError, match="task.network.trainable_stages"):
        detector("task.network.trainable_stages=5")


def test_unknown_detector_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"task.network.detector.rpn_typo.*FasterRCNN"):
        detector("+task.network.detector.rpn_typo=1")
    with pytest.raises(ConfigError, match=r"task.network.fpn_width"):
        detector("+task.network.fpn_width=1")


def test_c3_detects_on_images_of_several_sizes_that_are_no_multiple_of_its_blocks():
    """One batch of a 70x50 and a 64x64 image: maps of 70x50, 35x25, 18x13 against C3's 32x32 blocks."""
    torch.manual_seed(0)
    net = detector("attn=c3", "task.network.fpn_channels=16", "task.network.representation_size=32",
                   "data.min_size=50", "data.max_size=70")
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([2])}]
    losses = net(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(value) for value in losses.values())
    net.eval()
    with torch.no_grad():
        detections = net(images)
    assert [tuple(d["boxes"].shape[1:]) for d in detections] == [(4,), (4,)]
    assert all((d["boxes"][:, 2] <= 70).all() and (d["boxes"][:, 3] <= 64).all() for d in detections)


# -- runs ------------------------------------------------------------------------------------------------
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
    assert on_disk["macs"] > 0 and on_disk["params"] > 0


def test_the_coco_layout_trains_exactly_as_the_voc_layout(shapes_root, tmp_path):
    """The same scenes read from COCO JSON instead of VOC XML: the same batches, so the same run, to the bit."""
    args = ["attn=none", "trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    voc = train(run_config(tiny(shapes_root) + args, tmp_path / "voc"))
    coco = train(run_config(tiny(shapes_root, "shapes_coco") + args, tmp_path / "coco"))
    assert coco["primary_metric"] == {"name": "val/map", "mode": "max"}  # COCO's headline figure
    assert without_timing(coco["history"]) == without_timing(voc["history"])
    assert coco["test_map"] == voc["test_map"]


def test_resuming_a_detection_run_equals_the_uninterrupted_run(straight, shapes_root, tmp_path):
    args = tiny(shapes_root) + ["attn=c3", "+optim.scheduler.total_steps=4"]  # the first leg's schedule is the whole run's
    first = train(run_config(args + ["trainer.max_epochs=1"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=2", f"ckpt_path={first['checkpoints']['last']}"],
                               tmp_path / "legs"))
    assert without_timing(resumed["history"]) == without_timing(straight["history"])
    assert resumed["test_map_50"] == straight["test_map_50"]


def test_eval_reproduces_the_test_map(straight):
    metrics = evaluate(straight["checkpoints"]["best"], [])
    assert metrics["test/map_50"] == pytest.approx(straight["test_map_50"], abs=1e-6)
    assert metrics["test/map"] == pytest.approx(straight["test_map"], abs=1e-6)


def test_bench_times_detection_steps(tmp_path):
    result = bench(["task=detection", "data=shapes_detection", "model=resnet20", "attn=none,c3", "bench.batch_size=2",
                    "bench.warmup=1", "bench.steps=2", "task.network.fpn_channels=16",
                    "task.network.representation_size=32", f"bench.path={tmp_path / 'bench.json'}"])
    rows = {row["label"]: row for row in result["configurations"]}
    assert set(rows) == {"attn=none", "attn=c3"} and all(len(row["step_times_s"]) == 2 for row in rows.values())
    assert rows["attn=c3"]["params"] > rows["attn=none"]["params"]


def test_the_detection_module_declares_map_metrics():
    assert DetectionModule.metric_modes == {"map": "max", "map_50": "max", "map_75": "max"}
    assert c3exp.compose(["task=detection", "data=voc2007"]).task.primary_metric.name == "val/map_50"
    assert c3exp.compose(["task=detection", "data=coco2017"]).task.primary_metric.name == "val/map"


# -- the paper's experiment -------------------------------------------------------------------------
@pytest.mark.slow  # the whole experiment: 12 epochs of 300 scenes, about 5 minutes on 2 cores
def test_the_shapes_experiment_reaches_map50_of_one_half_and_eval_reproduces_it(shapes_root, tmp_path):
    results = train(run_config(["experiment=detection_shapes", "attn=c3", f"data.root={tmp_path / 'full'}",
                                "trainer.enable_progress_bar=false"], tmp_path / "run"))
    assert results["test_map_50"] >= 0.5
    metrics = evaluate(results["checkpoints"]["best"], [])
    assert metrics["test/map_50"] == pytest.approx(results["test_map_50"], abs=1e-6)


@pytest.mark.slow  # three training subprocesses
def test_a_multirun_over_attention_turns_into_the_table3_report(shapes_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*tiny(shapes_root), "trainer.max_epochs=1", "trainer.limit_train_batches=1", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run([sys.executable, "-m", "c3exp", "-m", "attn=none,se,c3", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    written = report([str(sweep), "--out", str(tmp_path / "report")])
    markdown = Path(written["markdown"]).read_text()
    section = markdown.split("## Detection (Table 3 right layout)\n", 1)[1]
    header = next(line for line in section.splitlines() if line.startswith("|"))
    assert all(f"{attn} mAP@0.5 (%)" in header for attn in ("none", "se", "c3"))
    assert "| resnet20 | shapes_detection |" in section
