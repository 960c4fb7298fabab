"""Shared fixtures: the real Hydra configs shrunk to test sizes, and CIFAR files written on the spot."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict

import c3exp
from c3exp.cli import run_reporting_user_errors

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


def c3exp_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m c3exp args` in a subprocess, W&B without credentials (offline); `env` entries set to "" are removed."""
    env = {**os.environ, "WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": "/nonexistent", **(env or {})}
    env = {k: v for k, v in env.items() if v != ""}
    return subprocess.run([sys.executable, "-m", "c3exp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_main(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """`python -m c3exp args` in this process, as its __main__ does: the exit status and stderr."""
    from c3exp import run as train_cli

    monkeypatch.setattr(sys, "argv", ["c3exp", *args])
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main()
    return exit_info.value.code, capsys.readouterr().err
