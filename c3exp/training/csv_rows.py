"""A resumed run's csv/metrics.csv keeps the rows its checkpoint covers.

Lightning's CSVLogger deletes an existing metrics.csv when it starts writing, so a run resumed
after a kill (or re-run after it finished) would lose every earlier epoch from its CSV while its
results.json history, which travels in the checkpoint, keeps them.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger


def rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of a metrics.csv logged before global step `step`, without their empty cells."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: v for k, v in row.items() if v not in ("", None)} for row in rows if _step(row) < step]


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


def carry_over_csv_rows(logger: CSVLogger, checkpoint: str | Path, global_step: int) -> int:
    """Write the rows that led up to `checkpoint` into `logger`'s new metrics.csv; their number.

    The rows come from the checkpoint's own run directory (<run>/checkpoints/x.ckpt ->
    <run>/csv/metrics.csv), which is this run's directory for `resume=auto`. Rows at or after the
    checkpoint's step were logged by work the resumed run repeats (or by the old run's test), so
    they are left out rather than duplicated.
    """
    source = Path(checkpoint).resolve().parent.parent / Path(logger.log_dir).name / "metrics.csv"
    kept = rows_before(source, global_step)  # read before the writer below deletes the file
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows they hold are kept here
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        writer = logger.experiment
    if kept:
        writer.metrics.extend(kept)
        writer.save()
    return len(kept)
