"""results.json: one file per run with everything a report needs."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


def summarise_history(history: list[dict[str, float]]) -> dict[str, Any]:
    """Best and final validation accuracy, and steady-state training throughput, from the epoch rows."""
    if not history:
        return {"epochs": 0}
    acc1 = [row["val/acc1"] for row in history]
    best = max(range(len(acc1)), key=acc1.__getitem__)
    speeds = [row["train/images_per_sec"] for row in history if "train/images_per_sec" in row]
    steady = speeds[1:] or speeds  # the first epoch pays for warm-up
    return {
        "epochs": len(history),
        "best_epoch": int(history[best]["epoch"]),
        "best_val_acc1": acc1[best],
        "best_val_acc5": max(row["val/acc5"] for row in history),
        "final_val_acc1": acc1[-1],
        "final_val_acc5": history[-1]["val/acc5"],
        "train_images_per_sec": statistics.median(steady) if steady else None,
    }


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
