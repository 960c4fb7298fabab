"""Shared fixtures and helpers: the real Hydra configs shrunk to test sizes, data files written on the spot,
the CLIs run as their __main__ does, and the small oracles more than one test module uses.

tests/ mirrors the package: tests/<subpackage>/test_<module>.py tests c3exp/<subpackage>/<module>.py, and
tests/test_<module>.py a top-level module (tests/cli/: the commands, tests/cli/test_train.py the `c3exp train` entry).
"""
from __future__ import annotations

import copy
import csv
import functools
import itertools
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from torch import nn

import c3exp
from c3exp.errors import run_reporting_user_errors
from c3exp.errors import DataNotFoundError
from c3exp.paths import config_dir

REPO = Path(__file__).resolve().parents[1]
TINY_DIGITS = ["data=digits", "trainer=cpu", "trainer.enable_progress_bar=false"]


def write_cifar(root: Path, variant: str = "cifar10", per_file: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small dataset in the exact on-disk format of the python-version CIFAR archives.

    Returns the arrays written, so tests can check what torchvision reads back.
    """
    rng = np.random.default_rng(seed)
    written: dict[str, np.ndarray] = {}

    def dump(path: Path, count: int, label_key: str, num_classes: int) -> None:
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=count).tolist()
        entry = {"batch_label": path.name, "data": data, label_key: labels, "filenames": [f"{i}.png" for i in range(count)]}
        if label_key == "fine_labels":
            entry["coarse_labels"] = [label // 5 for label in labels]
        path.write_bytes(pickle.dumps(entry, protocol=2))
        written[path.name] = data
        written[path.name + ":labels"] = np.asarray(labels)

    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            dump(folder / f"data_batch_{i}", per_file, "labels", 10)
        dump(folder / "test_batch", per_file, "labels", 10)
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_file, "num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        dump(folder / "train", per_file * 5, "fine_labels", 100)
        dump(folder / "test", per_file, "fine_labels", 100)
        meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
        (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def run_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """A composed config whose run directory is `output_dir` (what Hydra would set for a CLI run)."""
    cfg = c3exp.compose(overrides)
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_cifar(tmp_path, "cifar10")
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: on a shared, busy CPU several threads make these tiny models 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def error_line(command, capsys) -> str:
    """Run a CLI entry as its __main__ does; check it exits 2 with one `error:` line, and return that line."""
    with pytest.raises(SystemExit) as exit_info:
        run_reporting_user_errors(command)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    return err


def assert_names_bad_setting(line: str, key: str, value: Any) -> None:
    """c3exp's one line for a bad setting names `key` and `value` (its form: tests/test_cli_errors.py; the words of
    what a type hint allows: tests/test_schema.py); a test adds what its own rule must say, not the whole wording."""
    line = line.strip()
    assert "\n" not in line and f"{key}={value!r} is not valid: expected " in line, line


def c3exp_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m c3exp args` in a subprocess, W&B without credentials (offline); `env` entries set to "" are removed."""
    env = {**os.environ, "WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": "/nonexistent", **(env or {})}
    env = {k: v for k, v in env.items() if v != ""}
    return subprocess.run([sys.executable, "-m", "c3exp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_main(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """`python -m c3exp args` in this process, as its __main__ does: the exit status and stderr."""
    from c3exp.cli import train as train_cli

    monkeypatch.setattr(sys, "argv", ["c3exp", *args])
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    return exit_info.value.code, capsys.readouterr().err


def hydra_compose(*overrides: str) -> DictConfig:
    """The real configs composed by Hydra alone: no up-front command-line check, as a notebook would."""
    with hydra.initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides))


def build(*overrides: str) -> nn.Module:
    """build_model of the real configs composed by Hydra with `overrides`."""
    from c3exp.models import build_model

    return build_model(hydra_compose(*overrides))


# -- runs ----------------------------------------------------------------------------------------------------
TIMING = {"train/epoch_time", "train/images_per_sec"}


def without_timing(history: list[dict]) -> list[dict]:
    """History rows without their wall-clock keys: what must repeat exactly across runs and resumes."""
    return [{key: value for key, value in row.items() if key not in TIMING} for row in history]


# The digits for 4 training and 2 validation and test batches an epoch, for `python -m c3exp` (SIGKILL, sweeps, DDP)
SMALL_DIGITS = ["data=digits", "trainer.enable_progress_bar=false", "trainer.limit_train_batches=4",
                "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
# ResNet-20 + C3 on the digits, 6 training batches an epoch (training/test_train.py; cli/test_eval.py re-tests its checkpoints)
SHORT_RUN = TINY_DIGITS + ["model=resnet20", "attn=c3", "trainer.limit_train_batches=6", "trainer.limit_test_batches=4"]


@pytest.fixture(scope="session")
def two_epochs(tmp_path_factory) -> dict:
    """The results of a 2-epoch SHORT_RUN; tests that train on in its run directory copy it first."""
    from c3exp.training.train import train

    return train(run_config(SHORT_RUN + ["trainer.max_epochs=2"], tmp_path_factory.mktemp("first_leg")))


def cli_error_line(monkeypatch, capsys, tmp_path: Path, data: list[str]) -> str:
    """Train from the CLI on `data` for a step; check it exits 2 with exactly one stderr line, `error: ...`; return it."""
    tiny = ["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.enable_progress_bar=false",
            "data.num_workers=0"]
    code, err = run_main(monkeypatch, capsys, [*data, *tiny, f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# -- attention blocks ----------------------------------------------------------------------------------------
def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BN running statistics included, so nothing is an identity by chance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
    return module


def permutation_error(block: nn.Module, channels: int) -> float:
    """How far block(x permuted over channels) is from block(x) permuted alike: 0 for an equivariant block."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, channels, 8, 8, generator=generator)
    permutation = torch.randperm(channels, generator=generator)
    with torch.no_grad():
        return (block(x[:, permutation]) - block(x)[:, permutation]).abs().max().item()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.cache
def _attn_node(name: str) -> dict[str, Any]:
    return OmegaConf.to_container(c3exp.compose([f"attn={name}"]).attn)


def attn_config(name: str, **keys: Any) -> dict[str, Any]:
    """conf/attn/<name>.yaml's node, `keys` replacing its own: an attn config with every option of the block."""
    return {**copy.deepcopy(_attn_node(name)), **keys}


def attention_block(name: str, channels: int, spatial_size: tuple[int, int] | None = None, **options: Any) -> nn.Module:
    """Block `name` built as the config builds it (create_attn), with conf/attn/<name>.yaml's options but `options`."""
    from c3exp.attention import create_attn

    defaults = {key: value for key, value in attn_config(name)["options"].items() if key != "spatial_sizes"}
    return create_attn(name, channels, spatial_size, **{**defaults, **options})


# -- networks ------------------------------------------------------------------------------------------------
# attention on the backbones: none, a block with weights of its own in every block, C3 at the stage inputs
BACKBONE_ATTENTION = {"none": None, "cbam": "every_block", "c3": "stage_input"}  # cbam: a 2 -> 1 conv of its own


def backbone_attention(name: str) -> dict[str, Any] | None:
    """BACKBONE_ATTENTION's attn config `name`, composed when a test asks (not when conftest is imported)."""
    placement = BACKBONE_ATTENTION[name]
    return None if placement is None else attn_config(name, placement=placement)


def output_channels(model: nn.Module, size: int) -> tuple[int, ...]:
    """The channels of each stage's output on a size x size input."""
    with torch.no_grad():
        return tuple(out.shape[1] for out in model.eval().stage_outputs(torch.randn(1, 3, size, size)))


def torchvision_key_in_ours(key: str, stage_input: bool = False, wrapped_bn: str | None = None) -> str:
    """Where c3exp puts a torchvision tensor, written out by hand (the tests' own oracle)."""
    root, rest = key.split(".", 1)
    if root in ("conv1", "bn1", "fc"):
        return {"conv1": "stem.0.", "bn1": "stem.1.", "fc": "head.2."}[root] + rest
    block, tail = rest.split(".", 1)
    if wrapped_bn and tail.startswith(wrapped_bn + "."):
        tail = f"{wrapped_bn}.0.{tail[len(wrapped_bn) + 1:]}"
    return f"stages.{int(root[len('layer'):]) - 1}.{int(block) + stage_input}.{tail}"


@pytest.fixture(scope="module")
def c3_network() -> torch.nn.Module:
    """ResNet-20 + C3 for the digits, seeded, in eval mode."""
    torch.manual_seed(0)
    return c3exp.build_network(c3exp.compose(["model=resnet20", "attn=c3", "data=digits"])).eval()


# -- data ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """An empty folder the shapes data modules write their scenes into on first use (tests/data/test_voc.py
    overrides it with one that already holds a dataset)."""
    return tmp_path_factory.mktemp("shapes")


WIDTH, HEIGHT = 40, 20  # the hand-written detection images: wide, so resizing has a shorter and a longer side
SMALL = {"name": "small", "min_size": HEIGHT, "max_size": WIDTH, "batch_size": 2, "num_workers": 0}  # no resize of 40x20 images


def picture(box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """A grey WIDTH x HEIGHT image, red inside `box` (0-based, right/bottom exclusive): shows where the object went."""
    image = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    if box is not None:
        image.paste((255, 0, 0), box)
    return image


def error_of(build, kind: type[Exception] = DataNotFoundError) -> str:
    """The message `build()` raises: one line."""
    with pytest.raises(kind) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- analysis ------------------------------------------------------------------------------------------------
ANALYSIS_RUN = TINY_DIGITS + ["model=resnet20", "callbacks=analysis", "trainer.max_epochs=2", "data.batch_size=8",
                              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                              "trainer.limit_test_batches=2", "callbacks.channel_correlation.num_images=16"]


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, dict]:
    """ResNet-20 without and with C3, 2 tiny epochs each, with the correlation callback on."""
    from c3exp.training.train import train

    root = tmp_path_factory.mktemp("analysis_runs")
    return {attn: train(run_config(ANALYSIS_RUN + [f"attn={attn}"], root / attn)) for attn in ("none", "c3")}


# -- reports -------------------------------------------------------------------------------------------------
def rows_by_attn(path: Path) -> dict[str, dict[str, str]]:
    """A report's CSV, one row per attention."""
    return {row["attn"]: row for row in csv.DictReader(path.open())}


def float64_maps(seed: int = 1, channels: int = 8, size: tuple[int, int] = (5, 6), batch: int = 2) -> torch.Tensor:
    """A seeded (batch, channels, *size) float64 batch of maps: the input the blocks and their references share."""
    return torch.randn(batch, channels, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def assert_matches_reference(block: nn.Module, reference: nn.Module, x: torch.Tensor, rtol: float = 1e-9,
                             atol: float = 1e-12) -> None:
    """`block(x)` equals `reference(x)`, a naive implementation of the block's paper sharing its parameters."""
    with torch.no_grad():
        expected = reference(x)
        actual = block(x)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_gradients_match_reference(block: nn.Module, reference: nn.Module, x: torch.Tensor,
                                     weight: torch.Tensor | None = None, rtol: float = 1e-8,
                                     atol: float = 1e-12) -> tuple[torch.Tensor, ...]:
    """The gradients of a loss of `block(x)` and of `reference(x)` agree for `x` and every parameter.

    The loss is `(y * weight).sum()`, or `y.square().sum()` without a weight. Returns the block's
    gradients: for `x`, then for each parameter in `block.parameters()` order.
    """
    inputs = [x.requires_grad_(), *block.parameters()]
    loss = (lambda y: (y * weight).sum()) if weight is not None else (lambda y: y.square().sum())
    expected = torch.autograd.grad(loss(reference(x)), inputs)
    actual = torch.autograd.grad(loss(block(x)), inputs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
    return actual
