"""The paper's tables and validation curves from your runs: a folder of runs, a W&B project, or both.

Every results.json under `source` (searched recursively) and the finished runs of a W&B project are
reported per task (classification: Table 1; segmentation: Table 3), mean ± std over seeds. Only seeds are
pooled: runs of different recipes, or that differ in a setting that changes their numbers, are cells of
their own; of several runs of one seed the newest counts. Debug runs (debug=..., fast_dev_run,
overfit_batches) are left out, and damaged or unfinished runs skipped with one line each. Writes report.md,
report.csv and curves_<model>_<data>.png to `out`, and nowhere else (c3exp.report.output).

example: c3exp report source=outputs/quickstart
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from c3exp.cli.options import command, help_text, option, parse
from c3exp.errors import check


@dataclass
class Options:
    source: str | None = option("a sweep folder or outputs/ (searched recursively); also the first bare word", None,
                                metavar="DIR")
    out: str | None = option("where to write the report (default: source, else .)", None, metavar="DIR")
    wandb: str | None = option("also read the finished runs of this W&B project", None, metavar="ENTITY/PROJECT")
    include_debug: bool = option("also report runs of the debug configs", False)


def run(args: list[str]) -> dict[str, Path]:
    """Reads the runs, writes the report, prints report.md and where the files went; returns their paths."""
    from c3exp.report.output import write_report
    from c3exp.report.runs import collect_runs, collect_wandb_runs

    options, _ = parse(Options, args, positional=["source"])
    check(options.source is not None or options.wandb is not None, "source", None,
          "a runs directory, wandb=ENTITY/PROJECT, or both")
    runs, sources = [], []
    if options.source is not None:
        runs += collect_runs(options.source)
        sources.append(options.source)
    if options.wandb is not None:
        runs += collect_wandb_runs(options.wandb)
        sources.append(f"W&B {options.wandb}")
    written = write_report(runs, options.out or options.source or ".", sources, options.include_debug)
    print(written["markdown"].read_text(), end="")
    print(f"wrote {', '.join(str(path) for path in written.values())}")
    return written


def main(argv: Sequence[str] | None = None) -> dict[str, Path] | None:
    return command(argv, lambda: help_text("report", __doc__, Options), run)
