"""What each task's table shows: columns, the metric that decides the bold cell, the paper's figures beside ours.

A new task needs only a TableSpec in TABLE_SPECS, no branches elsewhere; one without gets derived_spec.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from c3exp.paper import (
    DETECTION_DATA,
    PAPER_DATA,
    SEGMENTATION_DATA,
    TABLE1,
    TABLE3_DETECTION,
    TABLE3_SEGMENTATION,
    ZOO_DATA,
    ZOO_IMAGENET,
    ZOO_MODEL,
    DetectionCell,
)
from c3exp.report.runs import Run
from c3exp.results import PrimaryMetric

if TYPE_CHECKING:  # a Cell is built with its spec: tables.py imports this module
    from c3exp.report.tables import Cell

CSV_IDENTITY = ("model", "data", "attn", "recipe")  # then a column per setting a block varies (Table.varied_keys)
CSV_COUNTS = ("seeds", "best_in_row")
CSV_SOURCES = ("runs",)


def format_number(value: float | None, digits: int) -> str:
    """'0.270' with `digits` decimals; '-' where there is no value."""
    return "-" if value is None else f"{value:.{digits}f}"


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
        return format_number(cell.cost_m(self.attr), self.digits)


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
        return f"{format_number(cell.mean(self.metric), 2)} ± {format_number(cell.std(self.metric), 2)}"


Column = CostColumn | MetricColumn
PaperFigures = tuple[float | None, ...]  # a NamedTuple of paper.py, whose fields the columns' paper_field name
PaperLookup = Callable[[str, str, str], PaperFigures | None]  # (model, data, attn) -> the paper's figures


def no_paper(model: str, data: str, attn: str) -> None:
    """The paper lookup of a task the paper has no table for."""
    return None


def paper_value(paper: PaperFigures | None, column: Column) -> float | None:
    """The paper's figure for one column of a cell (None where it has none, or it is illegible)."""
    return getattr(paper, column.paper_field) if paper is not None and column.paper_field else None


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

    def csv_sections(self, varied: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
        """CSV columns in sections (identity + `varied`, figures, counts, paper's, sources): tables merge by section."""
        figures = tuple(name for column in self.columns for name in column.csv_names)
        paper = tuple(f"paper_{column.name}" for column in self.columns if column.paper_field)
        return CSV_IDENTITY + varied, figures, CSV_COUNTS, paper, CSV_SOURCES


def table1(model: str, data: str, attn: str) -> PaperFigures | None:
    """Table 1's (params M, FLOPs M, top-1 %) of a CIFAR-100 cell; for ImageNet ResNet-50, the zoo block's paper."""
    if data == ZOO_DATA and model == ZOO_MODEL:
        return ZOO_IMAGENET.get(attn)
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
               "4 tiles with A-wide messages, 3-10% above the default C3's MACs: see BENCHMARKS.md); beside an "
               "ImageNet ResNet-50 cell, the figures of the block's own paper (`c3exp summary table=zoo`).",
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
    """The task's own spec, else one derived from its runs' metrics."""
    return TABLE_SPECS.get(task) or derived_spec(task, runs)
