"""metrics.csv replaced whole at each save (a kill leaves it whole); a resumed run keeps its checkpoint's rows."""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from c3exp.utils.atomic import atomic_write, remove_temps

HISTORY_TO_CSV = {"lr": "train/lr"}  # history keys the loggers get under another name
Row = dict[str, Any]


def rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of a metrics.csv logged before global step `step`, without their empty cells."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: v for k, v in row.items() if v not in ("", None)} for row in rows if _number(row, "step") < step]


def write_rows(path: Path, rows: list[Row]) -> None:
    """All of `rows` as a CSV with sorted columns, into a temporary file beside `path` renamed onto it."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)


def _number(row: Row, key: str) -> float:
    """row[key] as a number: inf where it is empty or not a number (rows without a step sort last)."""
    try:
        return float("inf" if row.get(key) in ("", None) else row[key])
    except (TypeError, ValueError):
        return float("inf")


def rows_from_history(rows: list[Row], history: list[Row], global_step: int) -> list[Row]:
    """Per epoch, the history's metrics its rows lack, at their step, else at its end (epochs taken as equally long)."""
    rebuilt = []
    for entry in history:
        epoch = int(entry["epoch"])
        logged = [row for row in rows if _number(row, "epoch") == epoch]
        present = {key for row in logged for key, value in row.items() if value not in ("", None)}
        named = {HISTORY_TO_CSV.get(key, key): value for key, value in entry.items() if key != "epoch"}
        missing = {key: value for key, value in named.items() if key not in present}
        end = max((epoch + 1) * global_step // (int(history[-1]["epoch"]) + 1) - 1, 0)
        if missing:
            rebuilt.append({"epoch": epoch, "step": max((int(_number(row, "step")) for row in logged), default=end),
                            **missing})
    return rebuilt


def carry_over_csv_rows(logger: CSVLogger, checkpoint: str | Path, global_step: int, history: list[Row]) -> int:
    """How many rows before `checkpoint`'s step went into `logger`'s metrics.csv (later ones: work resumed anew)."""
    source = Path(checkpoint).resolve().parent.parent / Path(logger.log_dir).name / "metrics.csv"
    kept = rows_before(source, global_step)  # read before Lightning's own writer below deletes the file
    rows = sorted([*kept, *rows_from_history(kept, history, global_step)], key=lambda row: _number(row, "step"))
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows they hold are kept here
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        writer = logger.experiment
    if rows:
        writer.metrics.extend(rows)
        writer.save()
    return len(rows)


class ReplacingCSVWriter(ExperimentWriter):
    """Lightning's writer keeping every row (a few an epoch) to replace metrics.csv whole at each save."""

    def __init__(self, log_dir: str) -> None:  # not Lightning's: it deletes the metrics.csv a resume carries over
        self.log_dir, self.hparams = log_dir, {}
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[Row] = []  # logged since the last save (CSVLogger counts them)
        self.saved: list[Row] = []
        os.makedirs(log_dir, exist_ok=True)
        remove_temps(Path(log_dir), self.NAME_METRICS_FILE)  # left by a killed save; this process is the only writer

    def save(self) -> None:
        if self.metrics:
            self.saved.extend(self.metrics)
            self.metrics = []
            write_rows(Path(self.metrics_file_path), self.saved)


class ReplacingCSVLogger(CSVLogger):
    """CSVLogger (same arguments, same files) whose metrics.csv is replaced whole at each save, never truncated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer: ReplacingCSVWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ReplacingCSVWriter:
        if self._writer is None:
            self._writer = ReplacingCSVWriter(self.log_dir)
        return self._writer

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._writer is not None:  # other DDP processes never started one
            self.save()
