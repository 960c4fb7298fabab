"""The text of report.md: how many runs from where, what was left out, then per task its table and curves."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from c3exp.report.selection import plural
from c3exp.report.specs import TableSpec, paper_value
from c3exp.report.tables import Cell, Table, attn_key, best_attns
from c3exp.summary import markdown_table


def with_paper(ours: str, paper: float | None) -> str:
    """'72.33 ± 2.52 (paper 75.1)': our figure, and the paper's beside it where it has one."""
    return ours if paper is None else f"{ours} (paper {paper:g})"


def markdown_cells(cell: Cell | None, spec: TableSpec, best: bool) -> list[str]:
    """One attention block's columns (each with the paper's figure beside it) and its seed count."""
    if cell is None:
        return [""] * len(spec.headers)
    texts = []
    for column in spec.columns:
        text = column.text(cell)
        text = f"**{text}**" if best and spec.decides_best(column) else text
        texts.append(with_paper(text, paper_value(cell.paper, column)))
    return [*texts, str(cell.seeds)]


# More attention blocks than this and the table gets a row per block (the zoo) instead of columns per block.
WIDE_TABLE_ATTNS = 4


def table_markdown(table: Table) -> str:
    """A row per (model, data); per attention block, in the paper's order, its columns; the row's best in bold.

    With more than WIDE_TABLE_ATTNS blocks, a row per (model, data, attention) instead: a sweep over the
    whole zoo stays readable.
    """
    attns = sorted({cell.attn for cell in table.cells}, key=attn_key)
    if len(attns) > WIDE_TABLE_ATTNS:
        return long_table_markdown(table)
    headers = ["model", "data"] + [f"{attn} {header}" for attn in attns for header in table.spec.headers]
    lines = []
    for (model, data), row in table.rows.items():
        best = best_attns(row)
        lines.append([model, data] + [text for attn in attns
                                      for text in markdown_cells(row.get(attn), table.spec, attn in best)])
    return markdown_table(headers, lines)


def long_table_markdown(table: Table) -> str:
    """A row per (model, data, attention), the blocks of a (model, data) in the paper's order, its best in bold."""
    lines = []
    for (model, data), row in table.rows.items():
        best = best_attns(row)
        for attn in sorted(row, key=attn_key):
            lines.append([model, data, attn, *markdown_cells(row[attn], table.spec, attn in best)])
    return markdown_table(["model", "data", "attn", *table.spec.headers], lines)


def section_markdown(table: Table, plots: Sequence[Path], out: Path) -> list[str]:
    """One task's section: what its numbers are, its table, cells that mix settings, its curves."""
    mixed = [f"- {cell.model} / {cell.data} / {cell.attn}: runs differ in {', '.join(cell.mixed_settings)}"
             for cell in table.cells if cell.mixed_settings]
    parts = [f"## {table.spec.heading}", "", table.spec.legend, "", table_markdown(table)]
    if mixed:
        parts += ["", "Cells whose runs used different settings:", *mixed]
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
