"""`python -m c3exp.report <sweep or outputs dir> [--out DIR] [--wandb ENTITY/PROJECT]`: the paper's tables, your runs.

Collects every run's results.json under the directory (recursively), and/or the finished runs of a
W&B project, and reports each task the runs declare (results.json's `task`; none: classification) in
its own section. Runs of the debug configs (task_name=debug, trainer.fast_dev_run, trainer.overfit_batches)
are left out unless --include-debug. Only seeds are pooled: a cell whose runs differ in any setting that can
change their numbers (their config less the seed and NON_RESULT_KEYS) reports the settings with the most
seeds; where it has several runs of one seed, the most recent one is kept, so means and stds are over
distinct seeds; the report says what it left out, and which setting differed. Writes to --out
(default: the directory):
  report.md        a table per task, a row per model and data, per attention block its columns and seed count
                   (report_tables.TABLE_SPECS); the best of each row in bold; the paper's figure beside ours:
                     classification  Table 1: params (M), MACs (M), test top-1 (%, mean ± sample std over
                                     seeds); the paper's for CIFAR-100 cells
                     segmentation    Table 3 (left): params (M), mean IoU, mean class accuracy, pixel
                                     accuracy (%, mean ± std); the paper's for VOC 2012 cells
  report.csv       the same, one line per (model, data, attention), with a best_in_row flag (and a task
                   column when the runs span several tasks)
  curves_<model>_<data>.png, curves_<task>_<model>_<data>.png (tasks other than classification)
                   the task's primary validation metric per epoch, mean ± std band over seeds, one line per attention
"""
from __future__ import annotations

import argparse
import json
import numbers
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np

from c3exp.analysis.cli import ArgumentParser
from c3exp.analysis.plots import ACCURACY_LABEL, Band, accuracy_curves
from c3exp.cli import run_reporting_user_errors
from c3exp.config import KEY_CHOICES
from c3exp.errors import ConfigError, check
from c3exp.report_tables import (DEFAULT_TASK, SETTING_KEYS, Cell, Table, TableSpec, build_tables, table_markdown,
                                 write_csv)
from c3exp.results import RESULTS_FILE, PrimaryMetric, hydra_config, read_results

__all__ = ["Cell", "Run", "collect_runs", "collect_wandb_runs", "main", "run_from_results",
           "run_from_wandb", "select_runs", "write_report"]
NOT_METRICS = ("loss",)  # test_<name> numbers of results.json that are not metrics in 0..1
WANDB_TEST_KEY = re.compile(r"(?:final/test_|test/)(\w+)")  # a test number in a W&B summary
# Config keys that cannot change a run's numbers ('*': any part; a key covers the keys below it). A cell pools
# runs as seeds only when their configs agree on every other key (Run.recipe).
SEED_KEYS = ("seed", "data.seed", "callbacks.epoch_seed.seed")  # the seed, and where the config copies it
NON_RESULT_KEYS = (
    *SEED_KEYS,
    "task_name", "run_name", "output_dir", "hydra", "_wandb", "trainer.default_root_dir",  # names and places
    "logger", "callbacks.*.dirpath", "callbacks.*.filename", "callbacks.channel_correlation",  # what is recorded
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps", "ckpt_path", "resume",  # a resumed run ends as an uninterrupted one (README)
    "trainer.accelerator", "trainer.devices", "trainer.strategy",  # data.batch_size is the global batch (README)
    "trainer.benchmark", "trainer.deterministic", "keep_freed_memory", "bench",  # speed and reproducibility
    "data.num_workers", "data.on_device", "model.channels_last", "model.compile",  # the same draws and network
)


@dataclass(frozen=True)
class Run:
    """What a report needs from one run, whether read from results.json or from W&B."""

    task: str
    primary: PrimaryMetric
    model: str
    attn: str
    data: str
    seed: int | None
    params: int | None
    macs: int | None
    test_metrics: Mapping[str, float]  # metric -> its test value, a fraction: {"acc1": 0.71, "acc5": 0.92}
    curve: tuple[tuple[int, float], ...]  # (0-based epoch, the primary validation metric, a fraction)
    settings: tuple[tuple[str, Any], ...]
    source: str
    debug: str | None = None  # the debug setting the run was made with (debug_marker), else None
    finished: float | None = None  # when it finished (POSIX seconds): the newest run of a seed is kept
    recipe: tuple[tuple[str, str], ...] = ()  # (dotted key, JSON value) of each setting that counts (recipe_of)


def run_from_results(results: Mapping[str, Any], source: str, config: Mapping[str, Any] | None = None,
                     finished: float | None = None) -> Run:
    """A Run from results.json; `config` is the run's composed config, where its debug settings are.

    Results from before tasks have no task and no primary metric: classification, judged by val/acc1.
    """
    primary = PrimaryMetric.of(results.get("primary_metric"))
    return Run(
        task=str(results.get("task") or DEFAULT_TASK),
        primary=primary,
        model=str(results["model"]),
        attn=str(results["attn"]),
        data=str(results["data"]),
        seed=results.get("seed"),
        params=results.get("params"),
        macs=results.get("macs"),
        test_metrics=test_metrics(results),
        curve=tuple((int(row["epoch"]), float(row[primary.name])) for row in results.get("history", [])
                    if row.get(primary.name) is not None),  # epochs without validation have no val keys
        settings=tuple((key, results.get(key)) for key in SETTING_KEYS),
        source=source,
        debug=debug_marker(config or {}) or debug_marker(results),  # the saved config says which debug setting
        finished=finished,
        recipe=recipe_of(config or {}, results),
    )


def test_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """metric -> test value of every test_<metric> number in results (not the loss, not test_ckpt's name)."""
    return {key.removeprefix("test_"): float(value) for key, value in results.items()
            if key.startswith("test_") and key.removeprefix("test_") not in NOT_METRICS and _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value of a nested config; W&B's flattened keys ('a.b', 'a/b') read the same.

    An empty mapping (attn.options: {}) has no leaves: it sets nothing, as if absent.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix + str(key).replace("/", ".")
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_non_result(key: str) -> bool:
    """Whether a dotted config key is one of NON_RESULT_KEYS, or below one."""
    return any(fnmatchcase(key, pattern) or fnmatchcase(key, f"{pattern}.*") for pattern in NON_RESULT_KEYS)


def recipe_of(config: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Every setting that can change a run's numbers: only runs with equal recipes are seeds of one mean.

    The saved config less NON_RESULT_KEYS; a run without one (results.json alone): results.json's settings.
    """
    flat = flat_config(config) if config else {KEY_CHOICES[key]: results.get(key) for key in SETTING_KEYS}
    return tuple(sorted((key, json.dumps(value, sort_keys=True, default=str)) for key, value in flat.items()
                        if not is_non_result(key)))


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
    """A finished c3exp run of the W&B API (its config is the resolved run config), or None.

    Finished: its summary has the test value of its primary metric (final/test_<metric> or test/<metric>).
    """
    config, summary = dict(run.config), dict(run.summary)
    declared = {key: value for key in ("name", "mode") if (value := _lookup(config, f"task.primary_metric.{key}"))}
    primary = PrimaryMetric.of(declared)
    tested = wandb_test_numbers(summary, primary)
    choices = {name: _lookup(config, key) for name, key in KEY_CHOICES.items()}
    if f"test_{primary.metric}" not in tested or choices["model"] is None:
        return None
    rows = run.history(keys=["epoch", primary.name], pandas=False)
    results = {
        **choices,
        "primary_metric": {"name": primary.name, "mode": primary.mode},
        "params": _first(summary, "final/params", "model/params"),
        "macs": _first(summary, "final/macs", "model/macs"),
        **tested,
        "history": [row for row in rows if row.get("epoch") is not None],
    }
    return run_from_results(results, source=str(getattr(run, "url", None) or getattr(run, "path", "wandb")),
                            config=config, finished=_timestamp(getattr(run, "created_at", None)))


def wandb_test_numbers(summary: Mapping[str, Any], primary: PrimaryMetric) -> dict[str, Any]:
    """results.json's test_<name> keys from a W&B summary: every final/test_<name> or test/<name> (final/ first)."""
    names = {match[1] for key in summary if (match := WANDB_TEST_KEY.fullmatch(str(key)))} | {primary.metric}
    found = {name: _first(summary, f"final/test_{name}", f"test/{name}") for name in sorted(names)}
    return {f"test_{name}": value for name, value in found.items() if value is not None}


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


def differences(left: Sequence[tuple[str, str]], reported: Sequence[tuple[str, str]], shown: int = 3) -> str:
    """'trainer.limit_train_batches=10 (reported: null)' for the first `shown` settings that differ."""
    mine, theirs = dict(left), dict(reported)
    keys = sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
    texts = [f"{key}={mine.get(key, 'unset')} (reported: {theirs.get(key, 'unset')})" for key in keys[:shown]]
    return ", ".join(texts) + (f" and {_plural(len(keys) - shown, 'other setting')}" if len(keys) > shown else "")


def _sources(runs: Sequence[Run]) -> str:
    return ", ".join(run.source for run in runs)


def _weight(group: Sequence[Run]) -> tuple:
    """The recipe a cell reports: the most seeds, then the most runs, then the most recent run."""
    return len({run.seed for run in group}), len(group), max(_recency(run) for run in group)


def one_recipe_per_cell(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The runs of one recipe per (model, data, attention), with a line per recipe left out and what differed.

    A mean over seeds estimates one recipe: averaging a 10-batch run with a full one measures neither.
    """
    cells: dict[tuple, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        cells[run.task, run.model, run.data, run.attn][run.recipe].append(run)
    kept, notes = [], []
    for (_, model, data, attn), recipes in cells.items():
        reported = max(recipes.values(), key=_weight)
        kept += reported
        notes += [f"{model} / {data} / {attn}: left out {_plural(len(group), 'run')} whose settings differ from the "
                  f"reported seeds' ({differences(recipe, reported[0].recipe)}): {_sources(group)}."
                  for recipe, group in recipes.items() if group is not reported]
    return kept, notes


def one_run_per_seed(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The most recent run of each (model, data, attention, seed), with a line per seed that had several.

    A re-run of a seed is not a new sample: averaging both would shrink the std and skew the mean.
    """
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.model, run.data, run.attn, run.seed].append(run)
    kept, notes = [], []
    for (_, model, data, attn, seed), group in groups.items():
        newest = max(group, key=_recency)
        kept.append(newest)
        if len(group) > 1:
            notes.append(f"{model} / {data} / {attn}: {len(group)} runs with seed {seed}; kept the most recent "
                         f"({newest.source}), left out {len(group) - 1}.")
    return kept, notes


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> Selection:
    """The runs to report: no debug runs (unless asked for), one recipe per cell, and one run per seed of it."""
    kept, notes = (list(runs), []) if include_debug else without_debug_runs(runs)
    skipped = len(runs) - len(kept)
    kept, other_settings = one_recipe_per_cell(kept)
    kept, duplicates = one_run_per_seed(kept)
    return Selection(tuple(kept), tuple(notes + other_settings + duplicates), skipped)


# -- curves --------------------------------------------------------------------------------------
def curve_band(runs: Sequence[Run]) -> Band | None:
    """Mean and sample std of the primary validation metric (%) per epoch over the runs that reached it.

    `runs` holds one run per seed (select_runs), so the band's n is the number of seeds with a curve.
    """
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for epoch, value in run.curve:
            by_epoch[epoch].append(100.0 * value)
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


def curve_path(out: Path, task: str, model: str, data: str) -> Path:
    """curves_<model>_<data>.png, as before tasks; other tasks' names lead theirs, so no two tables share a file."""
    parts = (model, data) if task == DEFAULT_TASK else (task, model, data)
    return out / f"curves_{'_'.join(parts)}.png"


def draw_curves(bands: Mapping[str, Band], title: str, path: Path, ylabel: str) -> Path:
    """accuracy_curves, naming the y axis only for a metric other than the one it labels itself (top-1)."""
    named = {} if ylabel == ACCURACY_LABEL else {"ylabel": ylabel}
    return accuracy_curves(bands, title, path, **named)


def curve_plots(table: Table, out: Path) -> list[Path]:
    """One PNG per (model, data) of a task: each attention block's curve of the runs' primary validation metric."""
    paths = []
    for (model, data), row in table.rows.items():
        bands = {attn: band for attn, cell in row.items() if (band := curve_band(cell.runs)) is not None}
        if bands:
            metric = validation_metric_name(table.spec, row)
            paths.append(draw_curves(bands, f"{model} on {data}: {metric}", curve_path(out, table.task, model, data),
                                     f"{metric} (%)"))
    return paths


def validation_metric_name(spec: TableSpec, row: Mapping[str, Cell]) -> str:
    """'validation top-1 accuracy': the long name of the primary metric a row's runs declare."""
    primary = next(run.primary for cell in row.values() for run in cell.runs)
    return f"validation {spec.describe(primary.metric)}"


# -- the report ----------------------------------------------------------------------------------
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
    parts = ["# Results", "", f"{_plural(count, 'run')} from {', '.join(sources)}."]
    if left_out:
        parts += ["", *(f"- {note}" for note in left_out)]
    for task, table in tables.items():
        parts += ["", *section_markdown(table, plots.get(task, ()), out)]
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
    tables = build_tables(selection.runs)
    plots = {task: curve_plots(table, out) for task, table in tables.items()}
    markdown = out / "report.md"
    markdown.write_text(report_markdown(tables, sources, plots, out, selection.notes))
    return {"markdown": markdown, "csv": write_csv(out / "report.csv", list(tables.values())),
            **{path.stem: path for paths in plots.values() for path in paths}}


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
