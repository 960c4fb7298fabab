"""`python -m c3exp.report <sweep or outputs dir> [--out DIR] [--wandb ENTITY/PROJECT]`: Table 1 from your runs.

Collects every run's results.json under the directory (recursively), and/or the finished runs of a
W&B project. Runs of the debug configs (task_name=debug, trainer.fast_dev_run, trainer.overfit_batches)
are left out unless --include-debug; where a cell has several runs of one seed, the most recent one is
kept, so means and stds are over distinct seeds; the report says what it left out. Writes to --out
(default: the directory):
  report.md                 the paper's Table 1 layout: a row per model and data, per attention block its
                            params (M), MACs (M), test top-1 (%, mean ± sample std over seeds) and seed count;
                            the best top-1 of each row in bold; the paper's figure beside ours for CIFAR-100 cells
  report.csv                the same, one line per (model, data, attention), with a best_in_row flag
  curves_<model>_<data>.png validation top-1 per epoch, mean ± std band over seeds, one line per attention
"""
from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from c3exp.analysis.cli import ArgumentParser
from c3exp.analysis.plots import Band, accuracy_curves
from c3exp.cli import run_reporting_user_errors
from c3exp.config import KEY_CHOICES
from c3exp.errors import ConfigError, check
from c3exp.results import RESULTS_FILE, hydra_config, read_results
from c3exp.paper import PAPER_DATA, TABLE1
from c3exp.summary import markdown_table

ATTN_ORDER = ("none", "se", "cbam", "c3")
# Settings that should agree within a cell; a cell mixing them gets a note.
SETTING_KEYS = ("optim", "max_epochs", "batch_size", "lr", "placement")
CSV_COLUMNS = ("model", "data", "attn", "params_m", "macs_m", "top1_mean", "top1_std", "seeds", "best_in_row",
               "paper_params_m", "paper_macs_m", "paper_top1", "runs")


@dataclass(frozen=True)
class Run:
    """What a report needs from one run, whether read from results.json or from W&B."""

    model: str
    attn: str
    data: str
    seed: int | None
    params: int | None
    macs: int | None
    test_acc1: float | None
    curve: tuple[tuple[int, float], ...]  # (0-based epoch, val/acc1 fraction)
    settings: tuple[tuple[str, Any], ...]
    source: str
    debug: str | None = None  # the debug setting the run was made with (debug_marker), else None
    finished: float | None = None  # when it finished (POSIX seconds): the newest run of a seed is kept


def run_from_results(results: Mapping[str, Any], source: str, config: Mapping[str, Any] | None = None,
                     finished: float | None = None) -> Run:
    """A Run from results.json; `config` is the run's composed config, where its debug settings are."""
    return Run(
        model=str(results["model"]),
        attn=str(results["attn"]),
        data=str(results["data"]),
        seed=results.get("seed"),
        params=results.get("params"),
        macs=results.get("macs"),
        test_acc1=results.get("test_acc1"),
        curve=tuple((int(row["epoch"]), float(row["val/acc1"])) for row in results.get("history", [])
                    if row.get("val/acc1") is not None),  # epochs without validation have no val keys
        settings=tuple((key, results.get(key)) for key in SETTING_KEYS),
        source=source,
        debug=debug_marker(config or {}) or debug_marker(results),  # the saved config says which debug setting
        finished=finished,
    )


def debug_marker(config: Mapping[str, Any]) -> str | None:
    """The setting that makes a run a debug run (conf/debug/*), or None.

    fast_dev_run tests one batch and overfit_batches trains on a few: neither accuracy belongs in a
    table, and results.json still reports the recipe's max_epochs. limit_*_batches alone is not a
    marker: it also makes legitimately small runs.
    """
    if _lookup(config, "trainer.fast_dev_run") not in (None, False, 0):
        return "trainer.fast_dev_run"
    if _lookup(config, "trainer.overfit_batches") not in (None, 0, 0.0):
        return "trainer.overfit_batches"
    if _lookup(config, "task_name") == "debug":
        return "task_name=debug"
    return None


def collect_runs(root: str | Path) -> list[Run]:
    """Every results.json below `root` (a sweep, a runs folder, or all of outputs/)."""
    root = Path(root)
    check(root.is_dir(), "source", str(root), "an existing directory of runs (a sweep or outputs/)")
    return [run_from_results(read_results(path), str(path.parent), hydra_config(path.parent), path.stat().st_mtime)
            for path in sorted(root.rglob(RESULTS_FILE))]


# -- W&B ---------------------------------------------------------------------------------------------
def _lookup(mapping: Mapping[str, Any], dotted: str) -> Any:
    """A value of a W&B config or summary: nested dicts, or keys flattened with '.' or '/'."""
    for flat in (dotted, dotted.replace(".", "/")):
        if flat in mapping:
            return mapping[flat]
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    return next((value for key in keys if (value := _lookup(mapping, key)) is not None), None)


def run_from_wandb(run: Any) -> Run | None:
    """A finished c3exp run of the W&B API (its config is the resolved run config), or None."""
    config, summary = dict(run.config), dict(run.summary)
    test_acc1 = _first(summary, "final/test_acc1", "test/acc1")
    choices = {name: _lookup(config, key) for name, key in KEY_CHOICES.items()}
    if test_acc1 is None or choices["model"] is None:
        return None
    rows = run.history(keys=["epoch", "val/acc1"], pandas=False)
    results = {
        **choices,
        "params": _first(summary, "final/params", "model/params"),
        "macs": _first(summary, "final/macs", "model/macs"),
        "test_acc1": float(test_acc1),
        "history": [row for row in rows if row.get("epoch") is not None],
    }
    return run_from_results(results, source=str(getattr(run, "url", None) or getattr(run, "path", "wandb")),
                            config=config, finished=_timestamp(getattr(run, "created_at", None)))


def _timestamp(text: Any) -> float | None:
    """POSIX seconds of an ISO time such as W&B's created_at; None when there is none."""
    try:
        return datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def collect_wandb_runs(project: str, api: Any = None) -> list[Run]:
    """The finished runs of W&B `ENTITY/PROJECT` (runs without a test accuracy are skipped)."""
    check(re.fullmatch(r"[\w.-]+/[\w.-]+", project or "") is not None, "--wandb", project, "ENTITY/PROJECT")
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        found = [run_from_wandb(run) for run in api.runs(project)]
    except Exception as error:  # no key, no network, no such project: one line, not a traceback
        raise ConfigError("--wandb", project, f"a W&B project you can read ({type(error).__name__}: {error})") from None
    return [run for run in found if run is not None]


# -- which runs count ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The runs a report summarises, and one line per kind of run it left out."""

    runs: tuple[Run, ...]
    notes: tuple[str, ...]
    skipped_debug: int = 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def without_debug_runs(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """Runs of the debug configs out, with one line saying how many and why."""
    debug = Counter(run.debug for run in runs if run.debug)
    if not debug:
        return list(runs), []
    why = ", ".join(f"{count} {marker}" for marker, count in debug.most_common())
    note = f"Skipped {_plural(debug.total(), 'debug run')} ({why}); --include-debug reports them."
    return [run for run in runs if not run.debug], [note]


def _recency(run: Run) -> tuple[float, str]:
    """Newer finish time first; the source path (timestamped run directories) breaks ties."""
    return (run.finished if run.finished is not None else float("-inf"), run.source)


def one_run_per_seed(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The most recent run of each (model, data, attention, seed), with a line per seed that had several.

    A re-run of a seed is not a new sample: averaging both would shrink the std and skew the mean.
    """
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.model, run.data, run.attn, run.seed].append(run)
    kept, notes = [], []
    for (model, data, attn, seed), group in groups.items():
        newest = max(group, key=_recency)
        kept.append(newest)
        if len(group) > 1:
            notes.append(f"{model} / {data} / {attn}: {len(group)} runs with seed {seed}; kept the most recent "
                         f"({newest.source}), left out {len(group) - 1}.")
    return kept, notes


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> Selection:
    """The runs to report: no debug runs (unless asked for) and one run per seed of each cell."""
    kept, notes = (list(runs), []) if include_debug else without_debug_runs(runs)
    skipped = len(runs) - len(kept)
    kept, duplicates = one_run_per_seed(kept)
    return Selection(tuple(kept), tuple(notes + duplicates), skipped)


# -- the table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """The runs of one (model, data, attention) and their summary."""

    model: str
    data: str
    attn: str
    runs: tuple[Run, ...]

    @property
    def top1(self) -> list[float]:
        return [100.0 * run.test_acc1 for run in self.runs if run.test_acc1 is not None]

    @property
    def seeds(self) -> int:
        """How many distinct seeds have a test accuracy (the sample size of mean and std)."""
        return len({run.seed for run in self.runs if run.test_acc1 is not None})

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.top1) if self.top1 else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds; None for a single run."""
        return statistics.stdev(self.top1) if len(self.top1) > 1 else None

    @property
    def params_m(self) -> float | None:
        return _mean_in_millions(run.params for run in self.runs)

    @property
    def macs_m(self) -> float | None:
        return _mean_in_millions(run.macs for run in self.runs)

    @property
    def paper(self) -> tuple[float, float, float] | None:
        """The paper's (params M, FLOPs M, top-1 %) for this cell, when it is one of Table 1's."""
        key = (self.model, self.attn)
        if self.data != PAPER_DATA or key not in TABLE1:
            return None
        return tuple(TABLE1[key])

    @property
    def mixed_settings(self) -> list[str]:
        """The settings that differ between this cell's runs (their means would mix recipes)."""
        return [key for key in SETTING_KEYS if len({dict(run.settings).get(key) for run in self.runs}) > 1]


def _mean_in_millions(values: Iterable[int | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) / 1e6 if known else None


def natural_key(text: str) -> tuple:
    """resnet20 < resnet32 < resnet110: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def attn_key(attn: str) -> tuple:
    return (ATTN_ORDER.index(attn), "") if attn in ATTN_ORDER else (len(ATTN_ORDER), attn)


def build_cells(runs: Iterable[Run]) -> dict[tuple[str, str], dict[str, Cell]]:
    """Rows keyed (model, data), each a dict attn -> Cell, in a stable, readable order."""
    grouped: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.model, run.data, run.attn].append(run)
    rows: dict[tuple[str, str], dict[str, Cell]] = {}
    for model, data, attn in sorted(grouped, key=lambda k: (natural_key(k[0]), k[1], attn_key(k[2]))):
        runs_of_cell = tuple(sorted(grouped[model, data, attn], key=lambda run: (run.seed is None, run.seed or 0)))
        rows.setdefault((model, data), {})[attn] = Cell(model, data, attn, runs_of_cell)
    return rows


def best_attns(row: Mapping[str, Cell]) -> set[str]:
    """The attention(s) with the highest mean top-1 of a row (ties all count)."""
    means = {attn: cell.mean for attn, cell in row.items() if cell.mean is not None}
    top = max(means.values(), default=None)
    return {attn for attn, mean in means.items() if mean == top}


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_paper(ours: str, paper: float | None) -> str:
    return ours if paper is None else f"{ours} (paper {paper:g})"


def top1_text(cell: Cell) -> str:
    """'85.31 ± 1.20' (mean ± sample std, %), '85.31 ± -' for one seed."""
    return f"{_number(cell.mean, 2)} ± {_number(cell.std, 2)}"


def markdown_cells(cell: Cell | None, best: bool) -> list[str]:
    """The four Table 1 columns of one attention block: params, MACs, top-1, seeds."""
    if cell is None:
        return ["", "", "", ""]
    paper = cell.paper or (None, None, None)
    top1 = top1_text(cell)
    top1 = f"**{top1}**" if best else top1
    return [
        _with_paper(_number(cell.params_m, 3), paper[0]),
        _with_paper(_number(cell.macs_m, 1), paper[1]),
        _with_paper(top1, paper[2]),
        str(cell.seeds),
    ]


def table_markdown(rows: Mapping[tuple[str, str], Mapping[str, Cell]]) -> str:
    attns = sorted({attn for row in rows.values() for attn in row}, key=attn_key)
    headers = ["model", "data"] + [f"{attn} {what}" for attn in attns
                                   for what in ("params (M)", "MACs (M)", "top-1 (%)", "seeds")]
    lines = []
    for (model, data), row in rows.items():
        best = best_attns(row)
        lines.append([model, data] + [text for attn in attns for text in markdown_cells(row.get(attn), attn in best)])
    return markdown_table(headers, lines)


def csv_rows(rows: Mapping[tuple[str, str], Mapping[str, Cell]]) -> list[dict[str, Any]]:
    out = []
    for row in rows.values():
        best = best_attns(row)
        for attn, cell in row.items():
            paper = cell.paper or (None, None, None)
            out.append({
                "model": cell.model, "data": cell.data, "attn": attn,
                "params_m": cell.params_m, "macs_m": cell.macs_m,
                "top1_mean": cell.mean, "top1_std": cell.std, "seeds": cell.seeds,
                "best_in_row": attn in best,
                "paper_params_m": paper[0], "paper_macs_m": paper[1], "paper_top1": paper[2],
                "runs": ";".join(run.source for run in cell.runs),
            })
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return path


# -- curves --------------------------------------------------------------------------------------
def curve_band(runs: Sequence[Run]) -> Band | None:
    """Mean and sample std of validation top-1 (%) per epoch over the runs that reached it.

    `runs` holds one run per seed (select_runs), so the band's n is the number of seeds with a curve.
    """
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for epoch, acc1 in run.curve:
            by_epoch[epoch].append(100.0 * acc1)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    values = [by_epoch[epoch] for epoch in epochs]
    return Band(
        x=np.array(epochs) + 1,  # epoch 0 is the first epoch trained
        mean=np.array([statistics.fmean(v) for v in values]),
        std=np.array([statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]),
        runs=len({run.seed for run in runs if run.curve}),
    )


def curve_plots(rows: Mapping[tuple[str, str], Mapping[str, Cell]], out: Path) -> list[Path]:
    """One PNG per (model, data): validation accuracy curves of each attention block."""
    paths = []
    for (model, data), row in rows.items():
        bands = {attn: band for attn, cell in row.items() if (band := curve_band(cell.runs)) is not None}
        if bands:
            title = f"{model} on {data}: validation top-1 accuracy"
            paths.append(accuracy_curves(bands, title, out / f"curves_{model}_{data}.png"))
    return paths


# -- the report ----------------------------------------------------------------------------------
def report_markdown(rows: Mapping[tuple[str, str], Mapping[str, Cell]], sources: Sequence[str],
                    plots: Sequence[Path], out: Path, left_out: Sequence[str] = ()) -> str:
    count = sum(len(cell.runs) for row in rows.values() for cell in row.values())
    notes = [f"- {cell.model} / {cell.data} / {cell.attn}: runs differ in {', '.join(cell.mixed_settings)}"
             for row in rows.values() for cell in row.values() if cell.mixed_settings]
    parts = [
        "# Results (Table 1 layout)",
        "",
        f"{_plural(count, 'run')} from {', '.join(sources)}.",
        "Top-1: test accuracy (%), mean ± sample standard deviation over seeds ('-': one seed); "
        "**bold**: best of the row. '(paper x)': the paper's Table 1 value for a CIFAR-100 cell "
        "(its FLOPs count BN and ReLU too, about 2% above our MACs; for C3 it also counted the block on "
        "4 tiles with A-wide messages, 3-10% above the default C3's MACs: see BENCHMARKS.md).",
        "",
        *(f"- {note}" for note in left_out),
        *([""] if left_out else []),
        table_markdown(rows),
    ]
    if notes:
        parts += ["", "Cells whose runs used different settings:", *notes]
    if plots:
        parts += ["", "## Validation accuracy curves", ""]
        parts += [f"![{path.stem}]({path.relative_to(out).as_posix()})" for path in plots]
    return "\n".join(parts) + "\n"


def write_report(runs: Sequence[Run], out: str | Path, sources: Sequence[str],
                 include_debug: bool = False) -> dict[str, Path]:
    """report.md, report.csv and the curve PNGs in `out`; returns their paths."""
    check(bool(runs), "source", ", ".join(sources), f"a source with at least one finished run ({RESULTS_FILE})")
    selection = select_runs(runs, include_debug)
    check(bool(selection.runs), "source", ", ".join(sources),
          f"a source with at least one finished run that is not a debug run (skipped "
          f"{_plural(selection.skipped_debug, 'debug run')}; --include-debug reports them)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = build_cells(selection.runs)
    plots = curve_plots(rows, out)
    markdown = out / "report.md"
    markdown.write_text(report_markdown(rows, sources, plots, out, selection.notes))
    return {"markdown": markdown, "csv": write_csv(out / "report.csv", csv_rows(rows)),
            **{path.stem: path for path in plots}}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m c3exp.report", description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", help="a sweep directory or outputs/ (searched recursively)")
    parser.add_argument("--out", help="where to write the report (default: the source directory, else .)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the finished runs of this W&B project")
    parser.add_argument("--include-debug", action="store_true",
                        help="also report runs of the debug configs (fast_dev_run, overfit_batches, task_name=debug)")
    args = parser.parse_args(argv)
    if args.source is None and args.wandb is None:
        parser.error("source=None is not valid: expected a runs directory, --wandb ENTITY/PROJECT, or both")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs, sources = [], []
    if args.source is not None:
        runs += collect_runs(args.source)
        sources.append(args.source)
    if args.wandb is not None:
        runs += collect_wandb_runs(args.wandb)
        sources.append(f"W&B {args.wandb}")
    written = write_report(runs, args.out or args.source or ".", sources, args.include_debug)
    print(written["markdown"].read_text(), end="")
    print(f"wrote {', '.join(str(path) for path in written.values())}")
    return written


if __name__ == "__main__":
    run_reporting_user_errors(main)
