"""Plug-ins from outside the package (docs/extending.md): a block, a backbone, a head, a task and data, each a module
of this folder named by `_target_` in a YAML under conf/, trained by the real command with conf/ on Hydra's searchpath
and this folder on the Python path, and no edit inside c3exp."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

import c3exp
from c3exp.utils.complexity import count_params
from tests.conftest import REPO, c3exp_cli

PLUGINS = Path(__file__).resolve().parent
SEARCHPATH = f"hydra.searchpath=[file://{PLUGINS / 'conf'}]"
TINY = ["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]


def train_with_plugins(args: list[str], run_dir: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """`python -m c3exp SEARCHPATH args`: the run's results.json and the shapes of its last checkpoint's weights."""
    path = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
    done = c3exp_cli([SEARCHPATH, *TINY, *args, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, env={"PYTHONPATH": path})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    state = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]
    return results, {name: tuple(tensor.shape) for name, tensor in state.items()}


def test_a_block_of_ones_own_goes_after_every_blocks_last_bn(tmp_path):
    results, shapes = train_with_plugins(["attn=gate", "data=digits"], tmp_path / "run")
    gates = {name: shape for name, shape in shapes.items() if name.endswith(".attention.weight")}
    widths = (16, 32, 64)  # ResNet-20's stages, 3 blocks each
    assert gates == {f"net.stages.{stage}.{block}.attention.weight": (width, 1, 1)
                     for stage, width in enumerate(widths) for block in range(3)}
    plain = count_params(c3exp.build_network(c3exp.compose(["data=digits"])))
    assert results["attn"] == "gate" and results["params"] == plain + 3 * sum(widths)


def test_a_backbone_of_ones_own_takes_the_attn_group(tmp_path):
    results, shapes = train_with_plugins(["model=tiny", "attn=se", "data=digits"], tmp_path / "run")
    assert shapes["net.stem.0.weight"] == (8, 3, 3, 3) and shapes["net.stages.1.0.weight"] == (16, 8, 3, 3)
    assert shapes["net.stages.0.2.fc.0.weight"] == (1, 8) and shapes["net.stages.1.2.fc.0.weight"] == (2, 16)  # SE, r = 8
    # stem 216 + 16 (BN), stages 576 + 16 + 16 (SE) and 1152 + 32 + 64 (SE), the 10-class head 160 + 10
    assert results["model"] == "tiny" and results["params"] == 2258


def test_a_head_of_ones_own_on_the_segmentation_backbone(tmp_path):
    shapes_data = [f"data.root={tmp_path / 'shapes'}", "data.train_images=8", "data.val_images=4", "data.image_size=32",
                   "data.crop_size=32", "data.batch_size=4"]
    results, shapes = train_with_plugins(["task=segmentation_tiny_head", "data=shapes", *shapes_data], tmp_path / "run")
    heads = {name: shape for name, shape in shapes.items() if name.startswith("net.head.")}
    assert heads == {"net.head.0.weight": (8, 64, 3, 3), "net.head.0.bias": (8,),  # ResNet-20's 64 channels -> hidden 8
                     "net.head.2.weight": (4, 8, 1, 1), "net.head.2.bias": (4,)}  # -> the shapes' 4 classes
    assert results["task"] == "segmentation" and 0 <= results["test_miou"] <= 1


def test_a_task_of_ones_own_logs_and_ranks_by_its_metric(tmp_path):
    results, _ = train_with_plugins(["task=f1", "data=digits"], tmp_path / "run")
    assert results["task"] == "f1" and results["primary_metric"] == {"name": "val/f1", "mode": "max"}
    assert results["best_val_f1"] == results["history"][0]["val/f1"] and 0 <= results["test_f1"] <= 1
    assert "test_acc1" not in results


def test_data_of_ones_own_sizes_the_classifier(tmp_path):
    results, shapes = train_with_plugins(["data=bars"], tmp_path / "run")
    assert results["data"] == "bars" and shapes["net.head.2.weight"] == (2, 64)  # Bars' 2 classes on ResNet-20's 64 channels
    assert 0 <= results["test_acc1"] <= 1


def test_docs_extending_shows_these_files_as_they_are():
    doc = (REPO / "docs" / "extending.md").read_text()
    shown = dict(re.findall(r"<!-- (tests/plugins/\S+) -->\n```\w+\n(.*?)```", doc, re.S))
    files = sorted(str(path.relative_to(REPO)) for path in [*PLUGINS.glob("my_*.py"), *PLUGINS.glob("conf/*/*.yaml")])
    assert sorted(shown) == files and len(files) == 10
    assert {path: shown[path] for path in files} == {path: (REPO / path).read_text() for path in files}
