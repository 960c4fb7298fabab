"""The tables of `python -m c3exp.report`: what each task's table shows, its cells, and their Markdown and CSV.

A task's table is described by a `TableSpec` (its columns per attention block, the metric that decides
the bold cell, the paper's figures), so adding a task means adding a spec, not branches: see
TABLE_SPECS. A task without a spec still gets a table, derived from the metrics its results declare.
"""
from __future__ import annotations

import csv
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c3exp.paper import (
    DETECTION_DATA,
    PAPER_DATA,
    SEGMENTATION_DATA,
    TABLE1,
    TABLE3_DETECTION,
    TABLE3_SEGMENTATION,
    DetectionCell,
)
from c3exp.results import PrimaryMetric
from c3exp.summary import markdown_table

if TYPE_CHECKING:
    from c3exp.report import Run

DEFAULT_TASK = "classification"  # results.json files from before tasks are classification runs
ATTN_ORDER = ("none", "se", "cbam", "c3")
# Settings that should agree within a cell; a cell mixing them gets a note.
SETTING_KEYS = ("optim", "max_epochs", "batch_size", "lr", "placement")
CSV_IDENTITY = ("model", "data", "attn")
CSV_COUNTS = ("seeds", "best_in_row")
CSV_SOURCES = ("runs",)


# -- what a table shows ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CostColumn:
    """A cost of the network (parameters, MACs) in millions, the mean over the cell's runs."""

    attr: str  # the Run attribute: params or macs
    header: str
    digits: int
    paper_field: str | None = None  # the field of the paper's figures (a NamedTuple) that this column shows

    @property
    def name(self) -> str:
        return f"{self.attr}_m"

    @property
    def csv_names(self) -> tuple[str, ...]:
        return (self.name,)

    def csv_values(self, cell: Cell) -> dict[str, Any]:
        return {self.name: cell.cost_m(self.attr)}

    def text(self, cell: Cell) -> str:
        return _number(cell.cost_m(self.attr), self.digits)


@dataclass(frozen=True)
class MetricColumn:
    """A test metric (a fraction in results) shown in %, mean ± sample std over seeds."""

    metric: str  # the name in results.json: acc1 for test_acc1
    name: str  # the CSV stem: top1 gives top1_mean and top1_std
    header: str
    long_name: str  # curve titles and axes: "validation <long_name>"
    paper_field: str | None = None

    @property
    def csv_names(self) -> tuple[str, ...]:
        return f"{self.name}_mean", f"{self.name}_std"

    def csv_values(self, cell: Cell) -> dict[str, Any]:
        return dict(zip(self.csv_names, (cell.mean(self.metric), cell.std(self.metric))))

    def text(self, cell: Cell) -> str:
        """'85.31 ± 1.20' (mean ± sample std, %), '85.31 ± -' for one seed."""
        return f"{_number(cell.mean(self.metric), 2)} ± {_number(cell.std(self.metric), 2)}"


Column = CostColumn | MetricColumn
PaperFigures = tuple[float | None, ...]  # a NamedTuple of paper.py, whose fields the columns' paper_field name
PaperLookup = Callable[[str, str, str], PaperFigures | None]  # (model, data, attn) -> the paper's figures


def no_paper(model: str, data: str, attn: str) -> None:
    return None


@dataclass(frozen=True)
class TableSpec:
    """One task's table: per attention block its columns and the seed count; bold marks the row's best `best`."""

    heading: str
    columns: tuple[Column, ...]
    best: PrimaryMetric  # the metric whose best test mean is bold (its mode says whether max or min)
    legend: str  # the paragraph above the table: what the numbers are
    paper: PaperLookup = no_paper

    @property
    def headers(self) -> tuple[str, ...]:
        return (*(column.header for column in self.columns), "seeds")

    def decides_best(self, column: Column) -> bool:
        return isinstance(column, MetricColumn) and column.metric == self.best.metric

    def describe(self, metric: str) -> str:
        """A metric's long name ('top-1 accuracy'), or the metric itself where no column shows it."""
        return next((column.long_name for column in self.columns
                     if isinstance(column, MetricColumn) and column.metric == metric), metric)

    def csv_sections(self) -> tuple[tuple[str, ...], ...]:
        """The CSV columns in sections (identity, figures, counts, the paper's, sources): tables merge by section."""
        figures = tuple(name for column in self.columns for name in column.csv_names)
        paper = tuple(f"paper_{column.name}" for column in self.columns if column.paper_field)
        return CSV_IDENTITY, figures, CSV_COUNTS, paper, CSV_SOURCES


def table1(model: str, data: str, attn: str) -> PaperFigures | None:
    """The paper's (params M, FLOPs M, top-1 %) of a CIFAR-100 cell of Table 1."""
    return TABLE1.get((model, attn)) if data == PAPER_DATA else None


def table3_segmentation(model: str, data: str, attn: str) -> PaperFigures | None:
    """The paper's (mean IoU %, mean accuracy %) of a VOC 2012 cell (its network: DeepLabv2, ResNet-101)."""
    return TABLE3_SEGMENTATION.get(attn) if data == SEGMENTATION_DATA else None


def table3_detection(model: str, data: str, attn: str) -> PaperFigures | None:
    """The paper's VOC 2007 mAP@0.5 beside a voc2007 cell, its COCO mAP beside a coco2017 cell (%)."""
    cell, field = TABLE3_DETECTION.get(attn), DETECTION_DATA.get(data)
    if cell is None or field is None:
        return None
    return DetectionCell(**{name: getattr(cell, name) if name == field else None for name in DetectionCell._fields})


PARAMS = CostColumn("params", "params (M)", 3)
TABLE_SPECS: dict[str, TableSpec] = {
    "classification": TableSpec(
        heading="Classification (Table 1 layout)",
        columns=(replace(PARAMS, paper_field="params_m"), CostColumn("macs", "MACs (M)", 1, "flops_m"),
                 MetricColumn("acc1", "top1", "top-1 (%)", "top-1 accuracy", "top1")),
        best=PrimaryMetric("val/acc1", "max"),
        legend="Top-1: test accuracy (%), mean ± sample standard deviation over seeds ('-': one seed); "
               "**bold**: best of the row. '(paper x)': the paper's Table 1 value for a CIFAR-100 cell "
               "(its FLOPs count BN and ReLU too, about 2% above our MACs; for C3 it also counted the block on "
               "4 tiles with A-wide messages, 3-10% above the default C3's MACs: see BENCHMARKS.md).",
        paper=table1,
    ),
    "segmentation": TableSpec(
        heading="Segmentation (Table 3 left layout)",
        columns=(PARAMS,
                 MetricColumn("miou", "miou", "mean IoU (%)", "mean IoU", "miou"),
                 MetricColumn("macc", "macc", "mean acc (%)", "mean class accuracy", "macc"),
                 MetricColumn("pixel_acc", "pixel_acc", "pixel acc (%)", "pixel accuracy")),
        best=PrimaryMetric("val/miou", "max"),
        legend="Mean IoU, mean class accuracy and pixel accuracy on the test split (VOC: its val set), %, mean ± "
               "sample standard deviation over seeds ('-': one seed); **bold**: best mean IoU of the row. "
               "'(paper x)': the paper's Table 3 (left) value for a PASCAL VOC 2012 cell, whatever our network: "
               "theirs is DeepLabv2 with ResNet-101 (its baseline mean IoU is illegible in the source; no pixel "
               "accuracy, no CBAM row).",
        paper=table3_segmentation,
    ),
    "detection": TableSpec(
        heading="Detection (Table 3 right layout)",
        columns=(PARAMS,
                 MetricColumn("map_50", "map50", "mAP@0.5 (%)", "mAP@0.5", "voc07_map50"),
                 MetricColumn("map", "map", "mAP (%)", "mAP@[.5:.95]", "coco_map"),
                 MetricColumn("map_75", "map75", "mAP@0.75 (%)", "mAP@0.75")),
        best=PrimaryMetric("val/map_50", "max"),
        legend="Box AP on the test split by COCO's protocol (101-point interpolation; VOC 'difficult' objects "
               "ignored), %, mean ± sample standard deviation over seeds ('-': one seed); **bold**: best mAP@0.5 "
               "of the row. '(paper x)': the paper's Table 3 (right) value, its VOC 2007 mAP@0.5 beside a voc2007 "
               "cell (VOC 2007's own 11-point AP) and its COCO mAP beside a coco2017 cell, whatever our network "
               "(theirs: Faster R-CNN on a ResNet; no CBAM row). Per-class AP: the runs' results.json.",
        paper=table3_detection,
    ),
}


def derived_spec(task: str, runs: Sequence[Run]) -> TableSpec:
    """A table for a task without a spec: params, then every test metric its runs have, the primary first."""
    primary = runs[0].primary if runs else PrimaryMetric()
    metrics = dict.fromkeys([primary.metric, *sorted({metric for run in runs for metric in run.test_metrics})])
    return TableSpec(
        heading=task.capitalize(),
        columns=(PARAMS, *(MetricColumn(metric, metric, f"{metric} (%)", metric) for metric in metrics)),
        best=primary,
        legend=f"Test metrics (%), mean ± sample standard deviation over seeds ('-': one seed); **bold**: best "
               f"{primary.metric} of the row.",
    )


def spec_for(task: str, runs: Sequence[Run]) -> TableSpec:
    return TABLE_SPECS.get(task) or derived_spec(task, runs)


# -- cells ---------------------------------------------------------------------------------------------
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


# -- Markdown ------------------------------------------------------------------------------------------
def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_paper(ours: str, paper: float | None) -> str:
    return ours if paper is None else f"{ours} (paper {paper:g})"


def paper_value(paper: PaperFigures | None, column: Column) -> float | None:
    """The paper's figure for one column of a cell (None where it has none, or it is illegible)."""
    return getattr(paper, column.paper_field) if paper is not None and column.paper_field else None


def markdown_cells(cell: Cell | None, spec: TableSpec, best: bool) -> list[str]:
    """One attention block's columns (each with the paper's figure beside it) and its seed count."""
    if cell is None:
        return [""] * len(spec.headers)
    texts = []
    for column in spec.columns:
        text = column.text(cell)
        text = f"**{text}**" if best and spec.decides_best(column) else text
        texts.append(_with_paper(text, paper_value(cell.paper, column)))
    return [*texts, str(cell.seeds)]


def table_markdown(table: Table) -> str:
    attns = sorted({cell.attn for cell in table.cells}, key=attn_key)
    headers = ["model", "data"] + [f"{attn} {header}" for attn in attns for header in table.spec.headers]
    lines = []
    for (model, data), row in table.rows.items():
        best = best_attns(row)
        lines.append([model, data] + [text for attn in attns
                                      for text in markdown_cells(row.get(attn), table.spec, attn in best)])
    return markdown_table(headers, lines)


# -- CSV -------------------------------------------------------------------------------------------------
def csv_rows(table: Table) -> list[dict[str, Any]]:
    """One line per (model, data, attention) of a table, with a best_in_row flag and the paper's figures."""
    out = []
    for row in table.rows.values():
        best = best_attns(row)
        for attn, cell in row.items():
            paper = cell.paper
            out.append({
                "model": cell.model, "data": cell.data, "attn": attn,
                **{key: value for column in table.spec.columns for key, value in column.csv_values(cell).items()},
                "seeds": cell.seeds, "best_in_row": attn in best,
                **{f"paper_{column.name}": paper_value(paper, column) for column in table.spec.columns
                   if column.paper_field},
                "runs": ";".join(run.source for run in cell.runs),
            })
    return out


def csv_columns(tables: Sequence[Table]) -> tuple[str, ...]:
    """Every table's columns once, section by section, and a leading task column when several tasks share the file.

    One task's file keeps exactly its own columns (classification: the columns reports had before tasks).
    """
    same_kind = zip(*(table.spec.csv_sections() for table in tables))  # (all identities), (all figures), ...
    names = [name for sections in same_kind for name in dict.fromkeys(chain.from_iterable(sections))]
    return ("task", *names) if len(tables) > 1 else tuple(names)


def write_csv(path: Path, tables: Sequence[Table]) -> Path:
    """report.csv: the lines of every table, under the columns of all of them (blank where a task has none)."""
    columns = csv_columns(tables)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for table in tables:
            for row in csv_rows(table):
                row = {"task": table.task, **row} if "task" in columns else row
                writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path
