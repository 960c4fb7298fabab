"""Run folders as `python -m c3exp` leaves them, written in a blink: the config Hydra composes for the overrides
(.hydra/config.yaml, hydra.yaml, overrides.yaml, saved as Hydra saves them) and a results.json with every key
c3exp.training.train writes, its numbers made up. tests/report/test_runs.py checks a real run folder against one.
"""
from __future__ import annotations

import copy
import csv
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from c3exp.config import compose, key_choices
from c3exp.results import RESULTS_FILE, PrimaryMetric, summarise_history, write_json


@lru_cache(maxsize=None)
def composed(overrides: tuple[str, ...]) -> DictConfig:
    """The config `python -m c3exp <overrides>` runs with, Hydra's own node included."""
    return compose(overrides, return_hydra_config=True)


def saved_hydra_files(run_dir: Path, overrides: Sequence[str], experiment: str | None = None) -> dict[str, str]:
    """The text of each .hydra file of a run of `overrides` in `run_dir`, as Hydra saves them (unresolved);
    `experiment` stands in for the composed choice (an experiment config that conf/ does not have yet)."""
    cfg = copy.deepcopy(composed(tuple(overrides)))
    hydra = cfg.hydra
    hydra.run.dir = hydra.runtime.output_dir = str(run_dir)
    hydra.mode, hydra.overrides.hydra = "RUN", [f"hydra.run.dir={run_dir}", "hydra.mode=RUN"]
    if experiment is not None:
        hydra.runtime.choices.experiment = experiment
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return {"config.yaml": OmegaConf.to_yaml(task), "overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, "hydra"))}


def results_of(run_dir: Path, overrides: Sequence[str], acc1: float) -> dict:
    """A classification run's results.json: two epochs validated, test top-1 `acc1`, every key train.py writes."""
    cfg = composed(tuple(overrides))
    primary = PrimaryMetric(**cfg.task.primary_metric)
    history = [{"epoch": epoch, "lr": 0.1, "train/loss": 2.0 - epoch, "train/acc1": acc1 / (2 - epoch),
                "train/acc5": 1.0, "val/loss": 2.1 - epoch, "val/acc1": acc1 / (2 - epoch), "val/acc5": 1.0,
                "train/epoch_time": 2.5, "train/images_per_sec": 25.0} for epoch in (0, 1)]
    return {**key_choices(cfg), "task_name": cfg.task_name,
            "primary_metric": {"name": primary.name, "mode": primary.mode},
            **summarise_history(history, primary, {"acc1": "max", "acc5": "max"}),
            "test_loss": 1.5, "test_acc1": acc1, "test_acc5": 1.0, "test_ckpt": cfg.test_ckpt, "train_seconds": 5.0,
            "run_dir": str(run_dir), "checkpoints": {"best": str(run_dir / "checkpoints" / "best-epoch001.ckpt"),
                                                     "last": str(run_dir / "checkpoints" / "last.ckpt")},
            "history": history, "params": 342_506, "macs": 41_429_632, "wall_seconds": 6.0}


def write_hydra_run(run_dir: Path, overrides: Sequence[str], acc1: float, experiment: str | None = None,
                    age: float = 0.0) -> Path:
    """A finished run folder of `python -m c3exp <overrides>` with test top-1 `acc1`, its results.json `age` s old."""
    (run_dir / ".hydra").mkdir(parents=True)
    for name, text in saved_hydra_files(run_dir, overrides, experiment).items():
        (run_dir / ".hydra" / name).write_text(text)
    path = write_json(run_dir / RESULTS_FILE, results_of(run_dir, overrides, acc1))
    when = 1_700_000_000 - age
    os.utime(path, (when, when))
    return run_dir


def rows_by_cell(path: Path) -> dict[str, dict[str, str]]:
    """report.csv's lines by their cell's name: 'c3', 'c3 (attn.stages=[1])'; 'strong_cifar100: c3' where the file
    has several recipes.

    The settings a block varies are the columns between `recipe` and the figures (params_m first).
    """
    rows = list(csv.DictReader(path.open()))
    columns = list(rows[0])
    varied = columns[columns.index("recipe") + 1:columns.index("params_m")]
    several = len({row["recipe"] for row in rows}) > 1
    names = {}
    for row in rows:
        settings = ", ".join(f"{key}={row[key]}" for key in varied if row[key])
        label = f"{row['attn']} ({settings})" if settings else row["attn"]
        names[f"{row['recipe'] or 'no experiment'}: {label}" if several else label] = row
    return names
