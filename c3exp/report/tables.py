"""Per task, runs in cells of one (model, data, attention, recipe, varied settings), in rows of one (model, data).

A recipe is a column group: two are never pooled, and the paper's figures stand only beside the paper's recipe.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from c3exp.attention import ATTENTION_NAMES
from c3exp.paper import is_paper_recipe
from c3exp.report.runs import DEFAULT_TASK, Run
from c3exp.report.selection import UNSET, Settings, block_label, varied_keys, varied_settings
from c3exp.report.specs import PaperFigures, TableSpec, spec_for

ATTN_ORDER = ATTENTION_NAMES  # the paper's blocks in its order, then the zoo in its registry order; others by name
# What a run was given to train with: cells of one row that differ in these are not a like-for-like comparison.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.limit_train_batches", "data.batch_size")
NO_EXPERIMENT = "no experiment"  # the column group of runs whose experiment is not recorded, beside named ones
Block = tuple[str, Settings]  # an attention block, and its values of the settings its runs vary
CellKey = tuple[str | None, Block]  # a cell's place in its row: its recipe (experiment) and block


@dataclass(frozen=True)
class Cell:
    """The runs of one (model, data, attention, recipe) of a task and the settings its block varies: their summary."""

    model: str
    data: str
    attn: str
    runs: tuple[Run, ...]
    spec: TableSpec | None = None  # None: the spec of the runs' task
    recipe: str | None = None  # the experiment its runs were composed with (a column group); None: not recorded
    varied: Settings = ()  # its values of the keys its block's runs vary (selection.varied_keys)

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
        """The paper's figures for this cell, when the paper has it and the cell ran the paper's recipe."""
        return self.spec.paper(self.model, self.data, self.attn) if is_paper_recipe(self.recipe) else None

    @property
    def label(self) -> str:
        """'c3', 'c3 (attn.stages=[1])'."""
        return block_label(self.attn, self.varied)

    @property
    def block(self) -> Block:
        return self.attn, self.varied

    @property
    def key(self) -> CellKey:
        """Its place in a row: its recipe and block (not its label: two values may read alike, '1' and 1)."""
        return self.recipe, self.block

    @property
    def budget(self) -> Settings:
        """Its runs' (key, JSON value) of BUDGET_KEYS: its runs share every setting but the seed."""
        recipe = dict(self.runs[0].recipe) if self.runs else {}
        return tuple((key, recipe.get(key, UNSET)) for key in BUDGET_KEYS)


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
        """The column groups: the paper's recipe first, then the others by name."""
        return sorted({cell.recipe for cell in self.cells}, key=recipe_key)

    @property
    def blocks(self) -> list[Block]:
        """The cells' blocks, the paper's in its order, a block's settings in the natural order of their labels."""
        return list(dict.fromkeys(cell.block for cell in sorted(self.cells, key=block_key)))

    @property
    def varied_keys(self) -> tuple[str, ...]:
        """Every key a block of the table varies: the CSV's columns for them."""
        return tuple(sorted({key for cell in self.cells for key, _ in cell.varied}))

    def cell_name(self, cell: Cell) -> str:
        """A cell's name in a legend: its label, after its recipe's where the table has several."""
        return cell.label if len(self.recipes) == 1 else f"{recipe_name(cell.recipe)}: {cell.label}"


def natural_key(text: str) -> tuple:
    """resnet20 < resnet32 < resnet110: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def attn_key(attn: str) -> tuple:
    """The paper's blocks in the paper's order, then any other block by name."""
    return (ATTN_ORDER.index(attn), "") if attn in ATTN_ORDER else (len(ATTN_ORDER), attn)


def recipe_key(recipe: str | None) -> tuple[bool, str]:
    """The paper's recipe (or runs that record none) first, then the other experiments by name."""
    return not is_paper_recipe(recipe), recipe or ""


def recipe_name(recipe: str | None) -> str:
    return recipe or NO_EXPERIMENT


def block_key(cell: Cell) -> tuple:
    return attn_key(cell.attn), natural_key(cell.label)


def cell_order(cell: Cell) -> tuple:
    """Rows by model (resnet20 < resnet110) and data, in a row the recipes, then the blocks."""
    return natural_key(cell.model), cell.data, recipe_key(cell.recipe), block_key(cell)


def build_cells(runs: Iterable[Run], spec: TableSpec | None = None) -> Rows:
    """Rows keyed (model, data) of (recipe, block) -> Cell; a cell pools an experiment's runs differing only by seed."""
    runs = list(runs)
    keys = varied_keys(runs)
    grouped: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.model, run.data, run.attn, run.experiment, varied_settings(run, keys)].append(run)
    cells = [Cell(model, data, attn, tuple(sorted(group, key=lambda run: (run.seed is None, run.seed or 0))), spec,
                  recipe, varied) for (model, data, attn, recipe, varied), group in grouped.items()]
    rows: Rows = {}
    for cell in sorted(cells, key=cell_order):
        rows.setdefault((cell.model, cell.data), {})[cell.key] = cell
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


def best_cells(row: Mapping[CellKey, Cell]) -> set[CellKey]:
    """The best cells of a row per recipe (ties all count): across recipes the recipe, not the block, would win."""
    spec = next(iter(row.values())).spec
    means = {key: mean for key, cell in row.items() if (mean := cell.mean(spec.best.metric)) is not None}
    return {key for key, mean in means.items()
            if mean == spec.best.best([other for (recipe, _), other in means.items() if recipe == key[0]])}
