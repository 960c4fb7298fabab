"""The report's curves: per (model, data), each cell's primary validation metric per epoch, mean ± std over seeds."""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import count
from pathlib import Path

import numpy as np

from c3exp.analysis.plots import ACCURACY_LABEL, Band, accuracy_curves
from c3exp.report.runs import DEFAULT_TASK, Run
from c3exp.report.specs import TableSpec
from c3exp.report.tables import Cell, CellKey, Table

NAME_LIMIT = 60  # characters of one name in a file name: three of them stay far below a file system's 255 bytes
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+=-]+")  # everything else, '/' and '\\' first, becomes '-'


def curve_band(runs: Sequence[Run]) -> Band | None:
    """Mean and sample std of the primary validation metric (%) per epoch over the runs (one per seed) that reached it."""
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for epoch, value in run.curve:
            by_epoch[epoch].append(100.0 * value)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    values = [by_epoch[epoch] for epoch in epochs]
    return Band(
        x=np.array(epochs),  # 0-based, as Lightning and results.json number them
        mean=np.array([statistics.fmean(v) for v in values]),
        std=np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]),
        runs=len({run.seed for run in runs if run.curve}),
    )


def safe_name(name: str) -> str:
    """A name from a run's files in a file name: no separator, '..' or leading dot: the report never writes outside."""
    safe = re.sub(r"\.{2,}", ".", UNSAFE_CHARACTERS.sub("-", name)).lstrip(".-")[:NAME_LIMIT]
    return safe or "unnamed"


def curve_path(out: Path, task: str, model: str, data: str) -> Path:
    """curves_<model>_<data>.png; other tasks' names lead theirs, so no two tables share a file."""
    parts = (model, data) if task == DEFAULT_TASK else (task, model, data)
    return out / f"curves_{'_'.join(map(safe_name, parts))}.png"


def unused(path: Path, taken: set[Path]) -> Path:
    """`path`, else path-2, path-3...: two rows whose names sanitise alike must not overwrite each other's curves."""
    candidates = (path.with_stem(f"{path.stem}-{number}") for number in count(2))
    chosen = path if path not in taken else next(candidate for candidate in candidates if candidate not in taken)
    taken.add(chosen)
    return chosen


def draw_curves(bands: Mapping[str, Band], title: str, path: Path, ylabel: str) -> Path:
    """accuracy_curves, naming the y axis only for a metric other than the one it labels itself (top-1)."""
    named = {} if ylabel == ACCURACY_LABEL else {"ylabel": ylabel}
    return accuracy_curves(bands, title, path, **named)


def validation_metric_name(spec: TableSpec, row: Mapping[CellKey, Cell]) -> str:
    """'validation top-1 accuracy': the long name of the primary metric a row's runs declare."""
    primary = next(run.primary for cell in row.values() for run in cell.runs)
    return f"validation {spec.describe(primary.metric)}"


def curve_plots(table: Table, out: Path, taken: set[Path]) -> list[Path]:
    """One PNG per (model, data) of a task, each cell's curve; `taken`: the paths written so far, this table's added."""
    paths = []
    for (model, data), row in table.rows.items():
        bands = {table.cell_name(cell): band for cell in row.values() if (band := curve_band(cell.runs)) is not None}
        if bands:
            metric = validation_metric_name(table.spec, row)
            path = unused(curve_path(out, table.task, model, data), taken)
            paths.append(draw_curves(bands, f"{model} on {data}: {metric}", path, f"{metric} (%)"))
    return paths
