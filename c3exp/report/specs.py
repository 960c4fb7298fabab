"""Per task its table's columns, bold cell and paper figures; a task without a TableSpec gets one derived."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from c3exp.paper import (DETECTION_DATA, PAPER_DATA, SEGMENTATION_DATA, TABLE1, TABLE3_DETECTION, TABLE3_SEGMENTATION,
                         ZOO_DATA, ZOO_IMAGENET, ZOO_MODEL, DetectionCell)
from c3exp.report.runs import Run
from c3exp.results import PrimaryMetric

if TYPE_CHECKING:  # a Cell is built with its spec: tables.py imports this module
    from c3exp.report.tables import Cell


@dataclass(frozen=True)
class Column:
    """A test metric in % (mean ± sample std over seeds), or with `digits` a cost of the network in millions."""

    metric: str  # the name in results.json (acc1 for test_acc1), or a cost's Run attribute: params, macs
    name: str  # the CSV stem: top1 gives top1_mean and top1_std; a cost has one column, params_m
    header: str
    long_name: str = ""  # curve titles and axes: "validation <long_name>"
    paper_field: str | None = None  # the field of the paper's figures (a NamedTuple) that this column shows
    digits: int | None = None  # a cost's decimals; None: a test metric

    @property
    def csv_names(self) -> tuple[str, ...]:
        return (self.name,) if self.digits is not None else (f"{self.name}_mean", f"{self.name}_std")

    def values(self, cell: Cell) -> tuple[float | None, ...]:
        """The figures of its csv_names: a cost's mean over the cell's runs, a metric's mean and sample std."""
        return (cell.cost_m(self.metric),) if self.digits is not None else cell.mean_std(self.metric)

    def text(self, cell: Cell) -> str:
        """'0.270' (a cost), '85.31 ± 1.20' (mean ± sample std, %), '85.31 ± -' for one seed."""
        digits = 2 if self.digits is None else self.digits
        return " ± ".join("-" if value is None else f"{value:.{digits}f}" for value in self.values(cell))


PaperFigures = tuple[float | None, ...]  # a NamedTuple of paper.py, whose fields the columns' paper_field name
PaperLookup = Callable[[str, str, str], PaperFigures | None]  # (model, data, attn) -> the paper's figures


def paper_value(paper: PaperFigures | None, column: Column) -> float | None:
    return getattr(paper, column.paper_field) if paper is not None and column.paper_field else None


@dataclass(frozen=True)
class TableSpec:
    """One task's table: per attention block its columns and the seed count; bold marks the row's best `best`."""

    heading: str
    columns: tuple[Column, ...]
    best: PrimaryMetric  # the metric whose best test mean is bold (its mode says whether max or min)
    legend: str  # the paragraph above the table: what the numbers are
    paper: PaperLookup = lambda model, data, attn: None  # a task the paper has no table for

    @property
    def headers(self) -> tuple[str, ...]:
        return (*(column.header for column in self.columns), "seeds")

    def decides_best(self, column: Column) -> bool:
        return column.digits is None and column.metric == self.best.metric

    def describe(self, metric: str) -> str:
        """A metric's long name ('top-1 accuracy'), else the metric itself."""
        return next((column.long_name for column in self.columns
                     if column.digits is None and column.metric == metric), metric)

    def csv_sections(self, varied: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
        """CSV columns in sections (identity + `varied`, figures, counts, paper's, sources): tables merge by section."""
        figures = tuple(name for column in self.columns for name in column.csv_names)
        paper = tuple(f"paper_{column.name}" for column in self.columns if column.paper_field)
        return ("model", "data", "attn", "recipe", *varied), figures, ("seeds", "best_in_row"), paper, ("runs",)


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


PARAMS = Column("params", "params_m", "params (M)", digits=3)
TABLE_SPECS: dict[str, TableSpec] = {
    "classification": TableSpec(
        heading="Classification (Table 1 layout)",
        columns=(replace(PARAMS, paper_field="params_m"), Column("macs", "macs_m", "MACs (M)", "", "flops_m", 1),
                 Column("acc1", "top1", "top-1 (%)", "top-1 accuracy", "top1")),
        best=PrimaryMetric("val/acc1", "max"),
        legend="Top-1: test accuracy (%), mean ± sample standard deviation over seeds ('-': one seed); "
               "**bold**: best of the row. '(paper x)': the paper's Table 1 value for a CIFAR-100 cell "
               "(its FLOPs count BN and ReLU too, about 2% above our MACs; for C3 it also counted the block on "
               "4 tiles with A-wide messages, 3-10% above the default C3's MACs: see BENCHMARKS.md); beside an "
               "ImageNet ResNet-50 cell, the figures of the block's own paper (`c3exp summary table=zoo`).",
        paper=table1),
    "segmentation": TableSpec(
        heading="Segmentation (Table 3 left layout)",
        columns=(PARAMS, Column("miou", "miou", "mean IoU (%)", "mean IoU", "miou"),
                 Column("macc", "macc", "mean acc (%)", "mean class accuracy", "macc"),
                 Column("pixel_acc", "pixel_acc", "pixel acc (%)", "pixel accuracy")),
        best=PrimaryMetric("val/miou", "max"),
        legend="Mean IoU, mean class accuracy and pixel accuracy on the test split (VOC: its val set), %, mean ± "
               "sample standard deviation over seeds ('-': one seed); **bold**: best mean IoU of the row. "
               "'(paper x)': the paper's Table 3 (left) value for a PASCAL VOC 2012 cell, whatever our network: "
               "theirs is DeepLabv2 with ResNet-101 (its baseline mean IoU is illegible in the source; no pixel "
               "accuracy, no CBAM row).",
        paper=table3_segmentation),
    "detection": TableSpec(
        heading="Detection (Table 3 right layout)",
        columns=(PARAMS, Column("map_50", "map50", "mAP@0.5 (%)", "mAP@0.5", "voc07_map50"),
                 Column("map", "map", "mAP (%)", "mAP@[.5:.95]", "coco_map"),
                 Column("map_75", "map75", "mAP@0.75 (%)", "mAP@0.75")),
        best=PrimaryMetric("val/map_50", "max"),
        legend="Box AP on the test split by COCO's protocol (101-point interpolation; VOC 'difficult' objects "
               "ignored), %, mean ± sample standard deviation over seeds ('-': one seed); **bold**: best mAP@0.5 "
               "of the row. '(paper x)': the paper's Table 3 (right) value, its VOC 2007 mAP@0.5 beside a voc2007 "
               "cell (VOC 2007's own 11-point AP) and its COCO mAP beside a coco2017 cell, whatever our network "
               "(theirs: Faster R-CNN on a ResNet; no CBAM row). Per-class AP: the runs' results.json.",
        paper=table3_detection),
}


def spec_for(task: str, runs: Sequence[Run]) -> TableSpec:
    """The task's own spec, else params, then every test metric its runs have, the primary first."""
    if task in TABLE_SPECS:
        return TABLE_SPECS[task]
    primary = runs[0].primary if runs else PrimaryMetric()
    metrics = dict.fromkeys([primary.metric, *sorted({metric for run in runs for metric in run.test_metrics})])
    return TableSpec(
        heading=task.capitalize(),
        columns=(PARAMS, *(Column(metric, metric, f"{metric} (%)", metric) for metric in metrics)),
        best=primary,
        legend=f"Test metrics (%), mean ± sample standard deviation over seeds ('-': one seed); **bold**: best "
               f"{primary.metric} of the row.",
    )
