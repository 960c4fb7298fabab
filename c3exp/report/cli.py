"""`python -m c3exp.report <sweep or outputs dir> [--out DIR] [--wandb ENTITY/PROJECT]`: the paper's tables, your runs.

Collects every run's results.json under the directory (recursively), and/or the finished runs of a
W&B project, and reports each task the runs declare (results.json's `task`; none: classification) in
its own section. Runs of the debug configs (task_name=debug, trainer.fast_dev_run, trainer.overfit_batches)
are left out unless --include-debug. Only seeds are pooled: runs of different recipes (the experiment in
.hydra/hydra.yaml) are column groups of their own, and runs of one recipe and attention block that differ in
any setting that can change their numbers (their config less the seed and NON_RESULT_KEYS: what a sweep
varies) are cells of their own, labelled by those settings ('c3 (attn.stages=[1])'); where a cell has several
runs of one seed, the most recent one is kept, so means and stds are over distinct seeds, and the report
says what it left out. A row whose cells ran different budgets (trainer.max_epochs, limit_train_batches,
data.batch_size) gets a note under its table. A results.json (or W&B run)
that is damaged (not UTF-8, not JSON, not an object, a field of the wrong type, NaN) or holds no result (no
trained epoch, no test value of its primary metric) is skipped with one line on stderr naming it and why; the
header counts only the runs in the tables. Writes to --out (default: the directory), and nowhere else: names
from the runs are sanitised into file names, and every file is written whole and replaced, never written
through a symlink already there:
  report.md        a table per task, a row per model and data, per attention block its columns and seed count
                   (specs.TABLE_SPECS); with several recipes (or more than 4 blocks) a row per block and per
                   recipe its columns; the best of each row (within its recipe) in bold; beside the paper's
                   recipe's cells (experiment=paper_cifar100/10, or none recorded) the paper's figure:
                     classification  Table 1: params (M), MACs (M), test top-1 (%, mean ± sample std over
                                     seeds); the paper's for CIFAR-100 cells
                     segmentation    Table 3 (left): params (M), mean IoU, mean class accuracy, pixel
                                     accuracy (%, mean ± std); the paper's for VOC 2012 cells
  report.csv       the same, one line per cell: model, data, attn, recipe, a column per varied setting, the
                   figures, a best_in_row flag (and a task column when the runs span several tasks)
  curves_<model>_<data>.png, curves_<task>_<model>_<data>.png (tasks other than classification)
                   the task's primary validation metric per epoch, mean ± std band over seeds, one line per cell
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from c3exp.analysis.cli import ArgumentParser
from c3exp.report.output import write_report
from c3exp.report.runs import Run, collect_runs
from c3exp.report.wandb_runs import collect_wandb_runs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line: a runs directory, a W&B project, or both."""
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
    """Reads the runs, writes the report, prints report.md and where the files went; returns their paths."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs: list[Run] = []
    sources: list[str] = []
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
