"""What a report writes: the curve PNGs, report.csv and report.md (write_report), all inside its folder."""
from __future__ import annotations

import csv
import io
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain, count
from pathlib import Path
from typing import Any

import numpy as np

from c3exp.analysis.plots import Band, accuracy_curves
from c3exp.errors import check
from c3exp.report.markdown import report_markdown
from c3exp.report.runs import DEFAULT_TASK, Run
from c3exp.report.tables import Table, best_cells, build_tables, plural, select_runs, shown_setting
from c3exp.results import RESULTS_FILE
from c3exp.utils.atomic import write_text

NAME_LIMIT = 60  # characters of one name in a file name: three of them stay far below a file system's 255 bytes
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+=-]+")  # everything else, '/' and '\\' first, becomes '-'


def curve_band(runs: Sequence[Run]) -> Band | None:
    """Mean and sample std of the primary validation metric (%) per epoch over the runs (seeds) that reached it."""
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for epoch, value in run.curve:
            by_epoch[epoch].append(100.0 * value)
    if not by_epoch:
        return None
    values = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    return Band(x=np.array(sorted(by_epoch)),  # 0-based, as Lightning and results.json number them
                mean=np.array([statistics.fmean(v) for v in values]),
                std=np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]),
                runs=len({run.seed for run in runs if run.curve}))


def safe_name(name: str) -> str:
    """A name from a run's files in a file name: no separator, '..' or leading dot: the report never writes outside."""
    safe = re.sub(r"\.{2,}", ".", UNSAFE_CHARACTERS.sub("-", name)).lstrip(".-")[:NAME_LIMIT]
    return safe or "unnamed"


def curve_plots(table: Table, out: Path, taken: set[Path]) -> list[Path]:
    """One PNG per (model, data) of a task, each cell's curve; `taken`: the paths written so far, this table's added."""
    paths = []
    for (model, data), row in table.rows.items():
        bands = {table.cell_name(cell): band for cell in row.values() if (band := curve_band(cell.runs)) is not None}
        if not bands:
            continue
        primary = next(run.primary for cell in row.values() for run in cell.runs)
        metric = f"validation {table.spec.describe(primary.metric)}"
        # curves_<model>_<data>.png, other tasks' names first; path-2, path-3...: two rows may sanitise alike
        parts = (model, data) if table.task == DEFAULT_TASK else (table.task, model, data)
        path = out / f"curves_{'_'.join(map(safe_name, parts))}.png"
        candidates = chain([path], (path.with_stem(f"{path.stem}-{number}") for number in count(2)))
        path = next(candidate for candidate in candidates if candidate not in taken)
        taken.add(path)
        paths.append(accuracy_curves(bands, f"{model} on {data}: {metric}", path, ylabel=f"{metric} (%)"))
    return paths


def csv_rows(table: Table) -> list[tuple[dict[str, Any], ...]]:
    """A line per cell in sections (identity, figures, counts, paper's, sources); best_in_row: within its recipe."""
    out, columns = [], table.spec.columns
    varied_keys = sorted({key for cell in table.cells for key, _ in cell.varied})  # the keys any block varies
    for row in table.rows.values():
        best = best_cells(row)
        for key, cell in row.items():
            varied = dict(cell.varied)
            out.append((
                {"model": cell.model, "data": cell.data, "attn": cell.attn, "recipe": cell.recipe,
                 **{name: shown_setting(varied[name]) if name in varied else None for name in varied_keys}},
                {name: value for column in columns for name, value in column.values(cell).items()},
                {"seeds": cell.seeds, "best_in_row": key in best},
                {f"paper_{column.name}": cell.paper_value(column) for column in columns if column.paper_field},
                {"runs": ";".join(run.source for run in cell.runs)},
            ))
    return out


def write_csv(path: Path, tables: Sequence[Table]) -> Path:
    """Every table's columns once, section by section, a task column where several tasks share the file."""
    rows = [({"task": table.task} if len(tables) > 1 else {}, *sections) for table in tables
            for sections in csv_rows(table)]
    columns = [name for sections in zip(*rows) for name in dict.fromkeys(chain.from_iterable(sections))]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for sections in rows:
        writer.writerow({key: "" if value is None else value for part in sections for key, value in part.items()})
    return write_text(path, text.getvalue())  # written whole: a symlink planted at `path` is replaced, not followed


def write_report(runs: Sequence[Run], out: str | Path, sources: Sequence[str],
                 include_debug: bool = False) -> dict[str, Path]:
    """Files written whole (a symlink in `out` is replaced, not followed), names sanitised: nothing leaves `out`."""
    check(bool(runs), "source", ", ".join(sources), f"a source with at least one finished run ({RESULTS_FILE})")
    selected, notes, skipped_debug = select_runs(runs, include_debug)
    check(bool(selected), "source", ", ".join(sources),
          f"a source with at least one finished run that is not a debug run (skipped "
          f"{plural(skipped_debug, 'debug run')}; include_debug=true reports them)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(selected)
    taken: set[Path] = set()
    plots = {task: curve_plots(table, out, taken) for task, table in tables.items()}
    markdown = write_text(out / "report.md", report_markdown(tables, sources, plots, out, notes))
    return {"markdown": markdown, "csv": write_csv(out / "report.csv", list(tables.values())),
            **{path.stem: path for paths in plots.values() for path in paths}}
