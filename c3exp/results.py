"""results.json: one file per run with everything a report needs."""
from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import yaml

from c3exp.schema import check_settings
from c3exp.utils.atomic import write_text

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric a task is judged by: the best checkpoint, results.json's best epoch, sweeps and reports."""

    name: Annotated[str, at.Predicate(lambda name: name.startswith("val/")),
                    "a validation metric logged by the task, e.g. val/acc1 or val/miou"] = "val/acc1"
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        check_settings(vars(self), PrimaryMetric, "task.primary_metric.")

    @property
    def metric(self) -> str:
        """The name after the stage: acc1 for val/acc1."""
        return self.name.partition("/")[2]

    @property
    def results_key(self) -> str:
        """Its best value's key in results.json: best_val_acc1."""
        return f"best_val_{self.metric}"

    def best(self, values: list[float]) -> float:
        return max(values) if self.mode == "max" else min(values)

    @classmethod
    def of(cls, value: PrimaryMetric | Mapping[str, Any] | None) -> PrimaryMetric:
        return value if isinstance(value, PrimaryMetric) else cls(**dict(value or {}))


def summarise_history(history: list[dict[str, float]], primary: PrimaryMetric, metric_modes: Mapping[str, str]) -> dict[str, Any]:
    """The best (0-based) epoch, each metric's best and final value, and the median throughput after epoch 0."""
    speeds = [row["train/images_per_sec"] for row in history if "train/images_per_sec" in row]
    steady = speeds[1:] or speeds  # the first epoch pays for warm-up
    summary: dict[str, Any] = {"epochs": len(history)}
    validated = [row for row in history if primary.name in row]
    if validated:
        best_value = primary.best([row[primary.name] for row in validated])
        best = next(row for row in validated if row[primary.name] == best_value)  # the first epoch to reach it
        summary.update(best_epoch=int(best["epoch"]), **{primary.results_key: best[primary.name]})
        for metric, mode in metric_modes.items():
            values = [row[f"val/{metric}"] for row in validated]
            summary.setdefault(f"best_val_{metric}", max(values) if mode == "max" else min(values))
        summary.update({f"final_val_{metric}": validated[-1][f"val/{metric}"] for metric in metric_modes})
    summary["train_images_per_sec"] = statistics.median(steady) if steady else None
    return summary


def primary_value(results: Mapping[str, Any]) -> float | None:
    """The best value of a run's primary metric (older results.json files: val/acc1)."""
    return results.get(PrimaryMetric.of(results.get("primary_metric") or {}).results_key)


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as JSON all at once: readers (reports, resumed sweeps) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def hydra_config(run_dir: Path, name: str = "config") -> dict[str, Any]:
    """A CLI run's .hydra/<name>.yaml ({} when absent or unreadable): config (the composed config), hydra (Hydra's)."""
    try:
        loaded = yaml.safe_load((run_dir / ".hydra" / f"{name}.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
