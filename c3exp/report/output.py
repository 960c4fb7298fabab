"""report.csv, and write_report, which selects the runs and writes report.md, report.csv and the curve PNGs."""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from c3exp.errors import check
from c3exp.report.markdown import report_markdown
from c3exp.report.plots import curve_plots
from c3exp.report.runs import Run
from c3exp.report.selection import plural, select_runs, shown_setting
from c3exp.report.specs import paper_value
from c3exp.report.tables import Table, best_cells, build_tables
from c3exp.results import RESULTS_FILE
from c3exp.utils.atomic import write_text


def csv_rows(table: Table) -> list[dict[str, Any]]:
    """One line per cell; best_in_row: the best of its row within its recipe."""
    out = []
    for row in table.rows.values():
        best = best_cells(row)
        for key, cell in row.items():
            paper, varied = cell.paper, dict(cell.varied)
            out.append({
                "model": cell.model, "data": cell.data, "attn": cell.attn, "recipe": cell.recipe,
                **{name: shown_setting(varied[name]) if name in varied else None for name in table.varied_keys},
                **{name: value for column in table.spec.columns for name, value in column.csv_values(cell).items()},
                "seeds": cell.seeds, "best_in_row": key in best,
                **{f"paper_{column.name}": paper_value(paper, column) for column in table.spec.columns
                   if column.paper_field},
                "runs": ";".join(run.source for run in cell.runs),
            })
    return out


def csv_columns(tables: Sequence[Table]) -> tuple[str, ...]:
    """Every table's columns once, section by section; a task column only when several tasks share the file."""
    # (all identities), (all figures), ...
    same_kind = zip(*(table.spec.csv_sections(table.varied_keys) for table in tables))
    names = [name for sections in same_kind for name in dict.fromkeys(chain.from_iterable(sections))]
    return ("task", *names) if len(tables) > 1 else tuple(names)


def write_csv(path: Path, tables: Sequence[Table]) -> Path:
    """Written whole with write_text: a symlink planted at `path` is replaced, not written through."""
    columns = csv_columns(tables)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for table in tables:
        for row in csv_rows(table):
            row = {"task": table.task, **row} if "task" in columns else row
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return write_text(path, text.getvalue())


def write_report(runs: Sequence[Run], out: str | Path, sources: Sequence[str],
                 include_debug: bool = False) -> dict[str, Path]:
    """Files written whole (a symlink in `out` is replaced, not followed), names sanitised: nothing leaves `out`."""
    check(bool(runs), "source", ", ".join(sources), f"a source with at least one finished run ({RESULTS_FILE})")
    selection = select_runs(runs, include_debug)
    check(bool(selection.runs), "source", ", ".join(sources),
          f"a source with at least one finished run that is not a debug run (skipped "
          f"{plural(selection.skipped_debug, 'debug run')}; include_debug=true reports them)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(selection.runs)
    taken: set[Path] = set()
    plots = {task: curve_plots(table, out, taken) for task, table in tables.items()}
    markdown = write_text(out / "report.md", report_markdown(tables, sources, plots, out, selection.notes))
    return {"markdown": markdown, "csv": write_csv(out / "report.csv", list(tables.values())),
            **{path.stem: path for paths in plots.values() for path in paths}}
