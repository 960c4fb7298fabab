"""Which runs a report pools in which cell of which row (recipes never pool); per task its columns and bold cell."""
from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from c3exp.attention import ATTENTION_NAMES
from c3exp.paper import (DETECTION_DATA, PAPER_DATA, SEGMENTATION_DATA, TABLE1, TABLE3_DETECTION, TABLE3_SEGMENTATION,
                         ZOO_DATA, ZOO_IMAGENET, ZOO_MODEL, DetectionCell, is_paper_recipe)
from c3exp.report.runs import DEFAULT_TASK, Run
from c3exp.results import PrimaryMetric

Settings = tuple[tuple[str, str], ...]  # (dotted key, JSON value), as Run.recipe holds them
UNSET = "unset"  # the value of a key a run's config does not have
# What a run was given to train with: cells of one row that differ in these are not a like-for-like comparison.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.limit_train_batches", "data.batch_size")
NO_EXPERIMENT = "no experiment"  # the column group of runs whose experiment is not recorded, beside named ones
Block = tuple[str, Settings]  # an attention block, and its values of the settings its runs vary
CellKey = tuple[str | None, Block]  # a cell's place in its row, not its label: two values may read alike, '1' and 1
PaperFigures = tuple[float | None, ...]  # a NamedTuple of paper.py, whose fields the columns' paper_field name
SPREAD = "mean ± sample standard deviation over seeds ('-': one seed)"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def varied_keys(runs: Sequence[Run]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(task, attn) -> keys differing within one model, data, attn and experiment: they tell a block's cells apart."""
    groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.attn, run.model, run.data, run.experiment].append(dict(run.recipe))
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (task, attn, *_), recipes in groups.items():
        keys[task, attn] |= {key for key in set().union(*recipes) if len({recipe.get(key) for recipe in recipes}) > 1}
    return {block: tuple(sorted(names)) for block, names in keys.items()}


def settings_of(run: Run, keys: Iterable[str]) -> Settings:
    """The run's values of `keys`: of its block's varied_keys, with its experiment, they name the cell it pools in."""
    recipe = dict(run.recipe)
    return tuple((key, recipe.get(key, UNSET)) for key in keys)


def shown_setting(value: str) -> str:
    """A setting's JSON (Run.recipe) as a label shows it: a string without quotes, anything else as JSON."""
    parsed = value if value == UNSET else json.loads(value)
    return parsed if isinstance(parsed, str) else value


def block_label(attn: str, settings: Settings) -> str:
    """'c3', or 'c3 (attn.stages=[1])': the attention block and what tells it from the block's other cells."""
    shown = ", ".join(f"{key}={shown_setting(value)}" for key, value in settings)
    return f"{attn} ({shown})" if shown else attn


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> tuple[list[Run], list[str], int]:
    """The runs to report, a note per kind left out, the debug runs skipped: a re-run of a seed is no new sample."""
    debug = Counter(run.debug for run in runs if run.debug and not include_debug)
    why = ", ".join(f"{count} {marker}" for marker, count in debug.most_common())
    notes = [f"Skipped {plural(debug.total(), 'debug run')} ({why}); include_debug=true reports them."] if debug else []
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if include_debug or not run.debug:
            groups[run.task, run.model, run.data, run.experiment, run.attn, run.recipe, run.seed].append(run)
    keys = varied_keys([run for group in groups.values() for run in group])
    kept = []
    for (task, model, data, experiment, attn, _, seed), group in groups.items():
        # newer finish time first; the source path (timestamped run directories) breaks ties
        newest = max(group, key=lambda run: (run.finished if run.finished is not None else float("-inf"), run.source))
        kept.append(newest)
        if len(group) > 1:
            parts = (model, data, experiment, block_label(attn, settings_of(newest, keys.get((task, attn), ()))))
            name = " / ".join(part for part in parts if part)  # no experiment: left out
            notes.append(f"{name}: {len(group)} runs with seed {seed}; kept the most recent ({newest.source}), "
                         f"left out {len(group) - 1}.")
    return kept, notes, debug.total()


@dataclass(frozen=True)
class Column:
    """A test metric in % (mean ± sample std over seeds), or with `digits` a cost of the network in millions."""

    metric: str  # the name in results.json (acc1 for test_acc1), or a cost's Run attribute: params, macs
    name: str  # the CSV stem: top1 gives top1_mean and top1_std; a cost has one column, params_m
    header: str
    long_name: str = ""  # curve titles and axes: "validation <long_name>"
    paper_field: str | None = None  # the field of the paper's figures (a NamedTuple) that this column shows
    digits: int | None = None  # a cost's decimals; None: a test metric

    def values(self, cell: Cell) -> dict[str, float | None]:
        """Its CSV columns: a cost's mean over the runs (name), a metric's mean and sample std (name_mean, name_std)."""
        if self.digits is None:
            return dict(zip((f"{self.name}_mean", f"{self.name}_std"), cell.mean_std(self.metric)))
        known = [value for run in cell.runs if (value := getattr(run, self.metric)) is not None]
        return {self.name: statistics.fmean(known) / 1e6 if known else None}

    def text(self, cell: Cell) -> str:
        """'0.270' (a cost), '85.31 ± 1.20' (mean ± sample std, %), '85.31 ± -' for one seed."""
        digits = 2 if self.digits is None else self.digits
        return " ± ".join("-" if value is None else f"{value:.{digits}f}" for value in self.values(cell).values())


@dataclass(frozen=True)
class TableSpec:
    """One task's table: per attention block its columns and the seed count; bold marks the row's best `best`."""

    heading: str
    columns: tuple[Column, ...]
    best: PrimaryMetric  # the metric whose best test mean is bold (its mode says whether max or min)
    legend: str  # the paragraph above the table: what the numbers are
    paper: Callable[[str, str, str], PaperFigures | None] = lambda model, data, attn: None  # (model, data, attn)

    @property
    def headers(self) -> tuple[str, ...]:
        return (*(column.header for column in self.columns), "seeds")

    def describe(self, metric: str) -> str:
        """A metric's long name ('top-1 accuracy'), else the metric itself."""
        return next((column.long_name for column in self.columns
                     if column.digits is None and column.metric == metric), metric)


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
        legend=f"Top-1: test accuracy (%), {SPREAD}; **bold**: best of the row. '(paper x)': the paper's Table 1 "
               "value for a CIFAR-100 cell (its FLOPs count BN and ReLU too, about 2% above our MACs; for C3 it also "
               "counted the block on 4 tiles with A-wide messages, 3-10% above the default C3's MACs: see "
               "BENCHMARKS.md); beside an ImageNet ResNet-50 cell, the figures of the block's own paper "
               "(`c3exp summary table=zoo`).",
        paper=lambda model, data, attn: (ZOO_IMAGENET.get(attn) if (model, data) == (ZOO_MODEL, ZOO_DATA)
                                         else TABLE1.get((model, attn)) if data == PAPER_DATA else None)),
    "segmentation": TableSpec(
        heading="Segmentation (Table 3 left layout)",
        columns=(PARAMS, Column("miou", "miou", "mean IoU (%)", "mean IoU", "miou"),
                 Column("macc", "macc", "mean acc (%)", "mean class accuracy", "macc"),
                 Column("pixel_acc", "pixel_acc", "pixel acc (%)", "pixel accuracy")),
        best=PrimaryMetric("val/miou", "max"),
        legend=f"Mean IoU, mean class accuracy and pixel accuracy on the test split (VOC: its val set), %, {SPREAD}; "
               "**bold**: best mean IoU of the row. '(paper x)': the paper's Table 3 (left) value for a PASCAL VOC "
               "2012 cell, whatever our network: theirs is DeepLabv2 with ResNet-101 (its baseline mean IoU is "
               "illegible in the source; no pixel accuracy, no CBAM row).",
        paper=lambda model, data, attn: TABLE3_SEGMENTATION.get(attn) if data == SEGMENTATION_DATA else None),
    "detection": TableSpec(
        heading="Detection (Table 3 right layout)",
        columns=(PARAMS, Column("map_50", "map50", "mAP@0.5 (%)", "mAP@0.5", "voc07_map50"),
                 Column("map", "map", "mAP (%)", "mAP@[.5:.95]", "coco_map"),
                 Column("map_75", "map75", "mAP@0.75 (%)", "mAP@0.75")),
        best=PrimaryMetric("val/map_50", "max"),
        legend=f"Box AP on the test split by COCO's protocol (101-point interpolation; VOC 'difficult' objects "
               f"ignored), %, {SPREAD}; **bold**: best mAP@0.5 of the row. '(paper x)': the paper's Table 3 (right) "
               "value, its VOC 2007 mAP@0.5 beside a voc2007 cell (VOC 2007's own 11-point AP) and its COCO mAP "
               "beside a coco2017 cell, whatever our network (theirs: Faster R-CNN on a ResNet; no CBAM row). "
               "Per-class AP: the runs' results.json.",
        paper=table3_detection),
}


def spec_for(task: str, runs: Sequence[Run]) -> TableSpec:
    """The task's own spec, else params, then every test metric its runs have, the primary first."""
    if task in TABLE_SPECS:
        return TABLE_SPECS[task]
    primary = runs[0].primary  # a task's table has runs
    metrics = dict.fromkeys([primary.metric, *sorted({metric for run in runs for metric in run.test_metrics})])
    return TableSpec(
        heading=task.capitalize(),
        columns=(PARAMS, *(Column(metric, metric, f"{metric} (%)", metric) for metric in metrics)),
        best=primary,
        legend=f"Test metrics (%), {SPREAD}; **bold**: best {primary.metric} of the row.",
    )


@dataclass(frozen=True)
class Cell:
    """The runs of one (model, data, attention, recipe) of a task and the settings its block varies: their summary."""

    model: str
    data: str
    attn: str
    runs: tuple[Run, ...]
    spec: TableSpec  # its table's: an unknown task's spec depends on all the task's runs (spec_for)
    recipe: str | None = None  # the experiment its runs were composed with (a column group); None: not recorded
    varied: Settings = ()  # its values of the keys its block's runs vary (varied_keys)

    def mean_std(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sample std (%) over the runs that have the test metric; no std from one run."""
        values = [100.0 * run.test_metrics[metric] for run in self.runs if run.test_metrics.get(metric) is not None]
        return statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None

    @property
    def seeds(self) -> int:
        """Distinct seeds with the metric that decides the row: the sample size of mean and std."""
        return len({run.seed for run in self.runs if run.test_metrics.get(self.spec.best.metric) is not None})

    def paper_value(self, column: Column) -> float | None:
        """The paper's figure of a column: it stands only beside the paper's recipe."""
        paper = self.spec.paper(self.model, self.data, self.attn) if is_paper_recipe(self.recipe) else None
        return getattr(paper, column.paper_field) if paper is not None and column.paper_field else None

    @property
    def label(self) -> str:
        return block_label(self.attn, self.varied)

    @property
    def block(self) -> Block:
        return self.attn, self.varied


Rows = dict[tuple[str, str], dict[CellKey, Cell]]


@dataclass(frozen=True)
class Table:
    """One task's runs as rows keyed (model, data), each (recipe, block) -> Cell."""

    task: str
    spec: TableSpec
    rows: Rows

    @property
    def cells(self) -> list[Cell]:
        return [cell for row in self.rows.values() for cell in row.values()]

    @property
    def recipes(self) -> list[str | None]:
        return sorted({cell.recipe for cell in self.cells}, key=recipe_key)

    @property
    def blocks(self) -> list[Block]:
        return list(dict.fromkeys(cell.block for cell in sorted(self.cells, key=block_key)))

    def cell_name(self, cell: Cell) -> str:
        """A cell's name in a legend: its label, after its recipe's where the table has several."""
        return cell.label if len(self.recipes) == 1 else f"{cell.recipe or NO_EXPERIMENT}: {cell.label}"


def natural_key(text: str) -> tuple:
    """resnet20 < resnet32 < resnet110: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def recipe_key(recipe: str | None) -> tuple[bool, str]:
    """The paper's recipe (or runs that record none) first, then the other experiments by name."""
    return not is_paper_recipe(recipe), recipe or ""


def block_key(cell: Cell) -> tuple:
    """The paper's blocks in its order, then the zoo's in registry order, then others by name; then the settings."""
    attn = (ATTENTION_NAMES.index(cell.attn), "") if cell.attn in ATTENTION_NAMES else (len(ATTENTION_NAMES), cell.attn)
    return attn, natural_key(cell.label)


def build_tables(runs: Sequence[Run]) -> dict[str, Table]:
    """A table per task, the default task first; a cell pools an experiment's runs that differ only by seed."""
    keys = varied_keys(runs)
    by_task: dict[str, list[Run]] = defaultdict(list)
    grouped: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
        varied = settings_of(run, keys.get((run.task, run.attn), ()))
        grouped[run.task, run.model, run.data, run.attn, run.experiment, varied].append(run)
    tables = {task: Table(task, spec_for(task, by_task[task]), {})
              for task in sorted(by_task, key=lambda name: (name != DEFAULT_TASK, name))}
    cells = [Cell(model, data, attn, tuple(sorted(group, key=lambda run: (run.seed is None, run.seed or 0))),
                  tables[task].spec, recipe, varied)
             for (task, model, data, attn, recipe, varied), group in grouped.items()]
    # rows by model (resnet20 < resnet110) and data; in a row the recipes, then the blocks
    cells.sort(key=lambda cell: (natural_key(cell.model), cell.data, recipe_key(cell.recipe), block_key(cell)))
    for cell in cells:
        tables[cell.runs[0].task].rows.setdefault((cell.model, cell.data), {})[cell.recipe, cell.block] = cell
    return tables


def best_cells(row: Mapping[CellKey, Cell]) -> set[CellKey]:
    """The best cells of a row per recipe (ties all count): across recipes the recipe, not the block, would win."""
    spec = next(iter(row.values())).spec
    means = {key: mean for key, cell in row.items() if (mean := cell.mean_std(spec.best.metric)[0]) is not None}
    return {key for key, mean in means.items()
            if mean == spec.best.best([other for (recipe, _), other in means.items() if recipe == key[0]])}
