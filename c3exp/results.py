"""results.json: one file per run with everything a report needs."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import yaml

RESULTS_FILE = "results.json"
HYDRA_CONFIG = Path(".hydra") / "config.yaml"  # the composed config Hydra saves in every CLI run directory


def summarise_history(history: list[dict[str, float]]) -> dict[str, Any]:
    """Best and final validation accuracy, and steady-state training throughput, from the epoch rows.

    Every training epoch has a row; only the epochs that ran validation (every
    trainer.check_val_every_n_epoch epochs) have val/* keys, and only those count for the val accuracies.
    """
    if not history:
        return {"epochs": 0}
    speeds = [row["train/images_per_sec"] for row in history if "train/images_per_sec" in row]
    steady = speeds[1:] or speeds  # the first epoch pays for warm-up
    summary: dict[str, Any] = {"epochs": len(history)}
    validated = [row for row in history if "val/acc1" in row]
    if validated:
        best = max(validated, key=lambda row: row["val/acc1"])
        summary.update(
            best_epoch=int(best["epoch"]),
            best_val_acc1=best["val/acc1"],
            best_val_acc5=max(row["val/acc5"] for row in validated),
            final_val_acc1=validated[-1]["val/acc1"],
            final_val_acc5=validated[-1]["val/acc5"],
        )
    summary["train_images_per_sec"] = statistics.median(steady) if steady else None
    return summary


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as JSON all at once: readers (reports, resumed sweeps) never see half a file.

    The temporary name carries the process id, so concurrent writers of one path do not collide.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    return write_json(Path(run_dir) / RESULTS_FILE, results)


def read_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def hydra_config(run_dir: Path) -> dict[str, Any]:
    """The run's composed config as Hydra saved it ({} when absent or unreadable)."""
    try:
        loaded = yaml.safe_load((run_dir / HYDRA_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
