"""A report's tables: per task, its runs grouped into cells of one (model, data, attention), in rows of one
(model, data), each cell summarising its runs as its task's spec (specs.py) says.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from c3exp.attention import ATTENTION_NAMES
from c3exp.report.runs import DEFAULT_TASK, SETTING_KEYS, Run
from c3exp.report.specs import PaperFigures, TableSpec, spec_for

ATTN_ORDER = ATTENTION_NAMES  # the paper's blocks in its order, then the zoo in its registry order; others by name


@dataclass(frozen=True)
class Cell:
    """The runs of one (model, data, attention) of a task, and their summary."""

    model: str
    data: str
    attn: str
    runs: tuple[Run, ...]
    spec: TableSpec | None = None  # None: the spec of the runs' task

    def __post_init__(self) -> None:
        if self.spec is None:
            object.__setattr__(self, "spec", spec_for(self.task, self.runs))

    @property
    def task(self) -> str:
        return self.runs[0].task if self.runs else DEFAULT_TASK

    def percents(self, metric: str) -> list[float]:
        return [100.0 * run.test_metrics[metric] for run in self.runs if run.test_metrics.get(metric) is not None]

    def mean(self, metric: str) -> float | None:
        values = self.percents(metric)
        return statistics.fmean(values) if values else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation over seeds; None for a single run."""
        values = self.percents(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def seeds(self) -> int:
        """How many distinct seeds have the metric that decides the row (the sample size of mean and std)."""
        return len({run.seed for run in self.runs if run.test_metrics.get(self.spec.best.metric) is not None})

    def cost_m(self, attr: str) -> float | None:
        """The mean of a cost (params, macs) over the runs that have it, in millions."""
        known = [value for run in self.runs if (value := getattr(run, attr)) is not None]
        return statistics.fmean(known) / 1e6 if known else None

    @property
    def paper(self) -> PaperFigures | None:
        """The paper's figures for this cell, when the paper has it."""
        return self.spec.paper(self.model, self.data, self.attn)

    @property
    def mixed_settings(self) -> list[str]:
        """The settings that differ between this cell's runs (their means would mix recipes)."""
        return [key for key in SETTING_KEYS if len({dict(run.settings).get(key) for run in self.runs}) > 1]


Rows = dict[tuple[str, str], dict[str, Cell]]


@dataclass(frozen=True)
class Table:
    """One task's runs as rows keyed (model, data), each attn -> Cell."""

    task: str
    spec: TableSpec
    rows: Rows

    @property
    def cells(self) -> list[Cell]:
        return [cell for row in self.rows.values() for cell in row.values()]


def natural_key(text: str) -> tuple:
    """resnet20 < resnet32 < resnet110: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def attn_key(attn: str) -> tuple:
    """The paper's blocks in the paper's order, then any other block by name."""
    return (ATTN_ORDER.index(attn), "") if attn in ATTN_ORDER else (len(ATTN_ORDER), attn)


def build_cells(runs: Iterable[Run], spec: TableSpec | None = None) -> Rows:
    """Rows keyed (model, data), each a dict attn -> Cell, in a stable, readable order."""
    grouped: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.model, run.data, run.attn].append(run)
    rows: Rows = {}
    for model, data, attn in sorted(grouped, key=lambda k: (natural_key(k[0]), k[1], attn_key(k[2]))):
        runs_of_cell = tuple(sorted(grouped[model, data, attn], key=lambda run: (run.seed is None, run.seed or 0)))
        rows.setdefault((model, data), {})[attn] = Cell(model, data, attn, runs_of_cell, spec)
    return rows


def build_tables(runs: Iterable[Run]) -> dict[str, Table]:
    """One table per task present, the default task first, each with its task's spec."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    tables = {}
    for task in sorted(by_task, key=lambda name: (name != DEFAULT_TASK, name)):
        spec = spec_for(task, by_task[task])
        tables[task] = Table(task, spec, build_cells(by_task[task], spec))
    return tables


def best_attns(row: Mapping[str, Cell]) -> set[str]:
    """The attention(s) with the best mean of the spec's deciding metric in a row (ties all count)."""
    spec = next(iter(row.values())).spec
    means = {attn: mean for attn, cell in row.items() if (mean := cell.mean(spec.best.metric)) is not None}
    top = spec.best.best(list(means.values())) if means else None
    return {attn for attn, mean in means.items() if mean == top}
