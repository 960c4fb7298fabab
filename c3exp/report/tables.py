"""A task's cells (model, data, attention, recipe, varied settings) in rows (model, data): recipes never pool."""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from c3exp.attention import ATTENTION_NAMES
from c3exp.paper import is_paper_recipe
from c3exp.report.runs import DEFAULT_TASK, Run
from c3exp.report.selection import Settings, block_label, settings_of, varied_keys
from c3exp.report.specs import PaperFigures, TableSpec, spec_for

ATTN_ORDER = ATTENTION_NAMES  # the paper's blocks in its order, then the zoo in its registry order; others by name
# What a run was given to train with: cells of one row that differ in these are not a like-for-like comparison.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.limit_train_batches", "data.batch_size")
NO_EXPERIMENT = "no experiment"  # the column group of runs whose experiment is not recorded, beside named ones
Block = tuple[str, Settings]  # an attention block, and its values of the settings its runs vary
CellKey = tuple[str | None, Block]  # a cell's place in its row, not its label: two values may read alike, '1' and 1


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
            object.__setattr__(self, "spec", spec_for(self.runs[0].task if self.runs else DEFAULT_TASK, self.runs))

    def mean_std(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sample std (%) over the runs that have the test metric; no std from one run."""
        values = [100.0 * run.test_metrics[metric] for run in self.runs if run.test_metrics.get(metric) is not None]
        return statistics.fmean(values) if values else None, statistics.stdev(values) if len(values) > 1 else None

    @property
    def seeds(self) -> int:
        """Distinct seeds with the metric that decides the row: the sample size of mean and std."""
        return len({run.seed for run in self.runs if run.test_metrics.get(self.spec.best.metric) is not None})

    def cost_m(self, attr: str) -> float | None:
        known = [value for run in self.runs if (value := getattr(run, attr)) is not None]
        return statistics.fmean(known) / 1e6 if known else None

    @property
    def paper(self) -> PaperFigures | None:
        """The paper's figures stand only beside the paper's recipe."""
        return self.spec.paper(self.model, self.data, self.attn) if is_paper_recipe(self.recipe) else None

    @property
    def label(self) -> str:
        return block_label(self.attn, self.varied)

    @property
    def block(self) -> Block:
        return self.attn, self.varied

    @property
    def budget(self) -> Settings:
        """Its runs' values of BUDGET_KEYS, which they share as they do every setting but the seed."""
        return settings_of(self.runs[0], BUDGET_KEYS)


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

    @property
    def varied_keys(self) -> tuple[str, ...]:
        return tuple(sorted({key for cell in self.cells for key, _ in cell.varied}))

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
    """The paper's blocks in its order, then others by name; a block's settings in their labels' natural order."""
    attn = (ATTN_ORDER.index(cell.attn), "") if cell.attn in ATTN_ORDER else (len(ATTN_ORDER), cell.attn)
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
