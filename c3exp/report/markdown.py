"""The text of report.md: how many runs from where, what was left out, then per task its table and curves."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from c3exp.report.tables import (BUDGET_KEYS, NO_EXPERIMENT, Cell, Table, TableSpec, best_cells, block_label, plural,
                                 settings_of, shown_setting)

WIDE_TABLE_ATTNS = 4  # more blocks than this, or several recipes: a row per block instead of columns per block


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with aligned columns: readable in a terminal, pasteable into docs."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def markdown_cells(cell: Cell | None, spec: TableSpec, best: bool) -> list[str]:
    """One cell's columns, each with the paper's figure beside it where it has one, and its seed count."""
    if cell is None:
        return [""] * len(spec.headers)
    texts = []
    for column in spec.columns:
        text, paper = column.text(cell), cell.paper_value(column)
        text = f"**{text}**" if best and column.digits is None and column.metric == spec.best.metric else text
        texts.append(text if paper is None else f"{text} (paper {paper:g})")
    return [*texts, str(cell.seeds)]


def table_markdown(table: Table) -> str:
    """A column group per block; with several recipes or many blocks, a row per block and a group per recipe."""
    recipes, blocks = table.recipes, table.blocks
    wide = len(recipes) == 1 and len(blocks) <= WIDE_TABLE_ATTNS
    groups = [block_label(*block) for block in blocks] if wide else [
        (recipe or NO_EXPERIMENT) if len(recipes) > 1 else "" for recipe in recipes]
    headers = ["model", "data", *([] if wide else ["attn"])]
    headers += [f"{group} {header}".strip() for group in groups for header in table.spec.headers]
    lines = []
    for (model, data), row in table.rows.items():
        best = best_cells(row)
        # (the line's leading cells, the keys of its column groups' cells)
        layout = [([], [(recipes[0], block) for block in blocks])] if wide else [
            ([block_label(*block)], [(recipe, block) for recipe in recipes]) for block in blocks
            if block in {block for _, block in row}]
        for lead, keys in layout:
            texts = [text for key in keys for text in markdown_cells(row.get(key), table.spec, key in best)]
            lines.append([model, data, *lead, *texts])
    return markdown_table(headers, lines)


def recipes_line(table: Table) -> list[str]:
    """What the column groups are: the recipes (experiments) of the runs, never pooled; none where none is recorded."""
    if table.recipes == [None]:
        return []
    names = ", ".join(NO_EXPERIMENT if not recipe else recipe if recipe.startswith("recipe=")
                      else f"experiment={recipe}" for recipe in table.recipes)
    several = "Recipes (a column group each, never pooled; bold: the row's best within its recipe)"
    return [f"{several if len(table.recipes) > 1 else 'Recipe'}: {names}.", ""]


def budget_notes(table: Table) -> list[str]:
    """Per row and recipe, its cells grouped by the budget settings that differ (recipes may differ by design)."""
    notes = []
    for (model, data), row in table.rows.items():
        recipes: dict[str | None, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
        for cell in row.values():  # its runs share every setting but the seed: the first one's budget is theirs
            recipes[cell.recipe][settings_of(cell.runs[0], BUDGET_KEYS)].append(table.cell_name(cell))
        for budgets in recipes.values():
            differ = [index for index in range(len(BUDGET_KEYS)) if len({budget[index] for budget in budgets}) > 1]
            texts = [", ".join(f"{budget[index][0]}={shown_setting(budget[index][1])}" for index in differ)
                     + f" ({', '.join(names)})" for budget, names in budgets.items()]
            notes += [f"- {model} / {data}: {'; '.join(texts)}"] if differ else []
    return notes


def report_markdown(tables: Mapping[str, Table], sources: Sequence[str], plots: Mapping[str, Sequence[Path]],
                    out: Path, left_out: Sequence[str] = ()) -> str:
    """How many runs from where and what was left out; per task its legend, recipes, table, budgets and curves."""
    count = sum(len(cell.runs) for table in tables.values() for cell in table.cells)
    parts = ["# Results", "", f"{plural(count, 'run')} from {', '.join(sources)}."]
    if left_out:
        parts += ["", *(f"- {note}" for note in left_out)]
    for task, table in tables.items():
        parts += ["", f"## {table.spec.heading}", "", table.spec.legend, "", *recipes_line(table)]
        parts.append(table_markdown(table))
        if budgets := budget_notes(table):
            parts += ["", "Rows whose cells had different budgets (compare them with care):", *budgets]
        if task_plots := plots.get(task, ()):
            parts += ["", "### Validation curves", ""]
            parts += [f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in task_plots]
    return "\n".join(parts) + "\n"
