"""A resumed run's metrics.csv keeps the rows its checkpoint covers: Lightning's CSVLogger deletes it at start, and
an epoch's train row is logged just after last.ckpt, so rows the CSV lacks are rebuilt from the checkpoint's history."""
from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger

from c3exp.utils.atomic import atomic_write

#: History keys that the loggers get under another name.
HISTORY_TO_CSV = {"lr": "train/lr"}


def rows_before(path: Path, step: int) -> list[dict[str, str]]:
    """The rows of a metrics.csv logged before global step `step`, without their empty cells."""
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [{k: v for k, v in row.items() if v not in ("", None)} for row in rows if _step(row) < step]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """All of `rows` as a CSV with sorted columns, into a temporary file beside `path` renamed onto it."""
    columns = sorted(set().union(*rows))
    with atomic_write(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _number(row: dict[str, Any], key: str) -> float:
    """row[key] as a number: inf where it is empty or not a number (rows without a step sort last)."""
    value = row.get(key)
    try:
        return float("inf" if value in ("", None) else value)
    except (TypeError, ValueError):
        return float("inf")


def _step(row: dict[str, Any]) -> float:
    return _number(row, "step")


def rows_from_history(rows: list[dict[str, Any]], history: list[dict[str, Any]], global_step: int) -> list[dict[str, Any]]:
    """One row per epoch of `history` with the metrics no row of that epoch holds, at the step of the epoch's rows
    (without any: of its end, epochs taken as equally long, exact for the checkpoint's own epoch)."""
    rebuilt = []
    for entry in history:
        epoch = int(entry["epoch"])
        logged = [row for row in rows if _number(row, "epoch") == epoch]
        missing = _missing_metrics(entry, logged)
        if missing:
            step = max((int(_step(row)) for row in logged), default=_epoch_end_step(epoch, history, global_step))
            rebuilt.append({"epoch": epoch, "step": step, **missing})
    return rebuilt


def _missing_metrics(entry: dict[str, Any], logged: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a history entry, under their CSV names, that none of its epoch's `logged` rows has a value of."""
    present = {key for row in logged for key, value in row.items() if value not in ("", None)}
    named = {HISTORY_TO_CSV.get(key, key): value for key, value in entry.items() if key != "epoch"}
    return {key: value for key, value in named.items() if key not in present}


def _epoch_end_step(epoch: int, history: list[dict[str, Any]], global_step: int) -> int:
    """The step Lightning logs epoch `epoch`'s end at (its last batch's), all epochs as long."""
    epochs = int(history[-1]["epoch"]) + 1
    return max((epoch + 1) * global_step // epochs - 1, 0)


def by_step(*groups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `groups` in step order, rows of one step in the order given."""
    return sorted((row for group in groups for row in group), key=_step)


def carry_over_csv_rows(logger: CSVLogger, checkpoint: str | Path, global_step: int, history: list[dict[str, Any]]) -> int:
    """Copy the rows before `checkpoint`'s step from its run's csv/metrics.csv into `logger`'s (lost ones rebuilt from
    `history`); later rows are work the resumed run repeats. Returns their number."""
    source = Path(checkpoint).resolve().parent.parent / Path(logger.log_dir).name / "metrics.csv"
    kept = rows_before(source, global_step)  # read before Lightning's own writer below deletes the file
    rows = by_step(kept, rows_from_history(kept, history, global_step))
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows they hold are kept here
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        writer = logger.experiment
    if rows:
        writer.metrics.extend(rows)
        writer.save()
    return len(rows)
