"""The text of report.md: how many runs from where, what was left out, then per task its table and curves."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from c3exp.report.selection import block_label, plural, shown_setting
from c3exp.report.specs import TableSpec, paper_value
from c3exp.report.tables import BUDGET_KEYS, NO_EXPERIMENT, Cell, Table, best_cells, recipe_name


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with aligned columns: readable in a terminal, pasteable into docs."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def with_paper(ours: str, paper: float | None) -> str:
    """'72.33 ± 2.52 (paper 75.1)': our figure, and the paper's beside it where it has one."""
    return ours if paper is None else f"{ours} (paper {paper:g})"


def markdown_cells(cell: Cell | None, spec: TableSpec, best: bool) -> list[str]:
    """One cell's columns (each with the paper's figure beside it) and its seed count; blanks where there is none."""
    if cell is None:
        return [""] * len(spec.headers)
    texts = []
    for column in spec.columns:
        text = column.text(cell)
        text = f"**{text}**" if best and spec.decides_best(column) else text
        texts.append(with_paper(text, paper_value(cell.paper, column)))
    return [*texts, str(cell.seeds)]


# More attention blocks than this, or several recipes, and the table gets a row per block instead of columns per block.
WIDE_TABLE_ATTNS = 4


def table_markdown(table: Table) -> str:
    """A column group per block; with several recipes or many blocks, a row per block and a group per recipe."""
    recipes, blocks = table.recipes, table.blocks
    wide = len(recipes) == 1 and len(blocks) <= WIDE_TABLE_ATTNS
    groups = [block_label(*block) for block in blocks] if wide else [
        recipe_name(recipe) if len(recipes) > 1 else "" for recipe in recipes]
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
    names = ", ".join(NO_EXPERIMENT if not recipe else recipe if recipe.startswith("recipe=") else f"experiment={recipe}"
                      for recipe in table.recipes)
    if len(table.recipes) == 1:
        return [f"Recipe: {names}.", ""]
    return [f"Recipes (a column group each, never pooled; bold: the row's best within its recipe): {names}.", ""]


def budget_notes(table: Table) -> list[str]:
    """Per row and recipe, cells that ran different budgets (not like for like); recipes may differ by design."""
    notes = []
    for (model, data), row in table.rows.items():
        recipes: dict[str | None, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
        for cell in row.values():
            recipes[cell.recipe][cell.budget].append(table.cell_name(cell))
        notes += [f"- {model} / {data}: {text}" for budgets in recipes.values() if (text := budget_text(budgets))]
    return notes


def budget_text(budgets: Mapping[tuple, list[str]]) -> str:
    """The cells of one recipe in one row, grouped by the budget settings that differ; '' where they agree."""
    differ = [index for index in range(len(BUDGET_KEYS)) if len({budget[index] for budget in budgets}) > 1]
    texts = [", ".join(f"{budget[index][0]}={shown_setting(budget[index][1])}" for index in differ)
             + f" ({', '.join(names)})" for budget, names in budgets.items()]
    return "; ".join(texts) if differ else ""


def section_markdown(table: Table, plots: Sequence[Path], out: Path) -> list[str]:
    """One task's section: what its numbers are, its recipes, its table, rows of different budgets, its curves."""
    budgets = budget_notes(table)
    parts = [f"## {table.spec.heading}", "", table.spec.legend, "", *recipes_line(table), table_markdown(table)]
    if budgets:
        parts += ["", "Rows whose cells had different budgets (compare them with care):", *budgets]
    if plots:
        parts += ["", "### Validation curves", ""]
        parts += [f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in plots]
    return parts


def report_markdown(tables: Mapping[str, Table], sources: Sequence[str], plots: Mapping[str, Sequence[Path]],
                    out: Path, left_out: Sequence[str] = ()) -> str:
    """report.md: how many runs from where and what was left out, then a section per task."""
    count = sum(len(cell.runs) for table in tables.values() for cell in table.cells)
    parts = ["# Results", "", f"{plural(count, 'run')} from {', '.join(sources)}."]
    if left_out:
        parts += ["", *(f"- {note}" for note in left_out)]
    for task, table in tables.items():
        parts += ["", *section_markdown(table, plots.get(task, ()), out)]
    return "\n".join(parts) + "\n"
