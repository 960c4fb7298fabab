"""Training throughput of one or more configurations, timed interleaved in one process on synthetic batches.

Prints a table (ratios to the first configuration: of the medians, of the fastest steps, and the median of
same-round ratios, "x paired"; in loop mode, of the two loops' block medians per round) and writes the raw
step times, machine and date to a new JSON file (or bench.path). Comma-separated values define the
configurations (their product, in the order given): model=resnet20,resnet110 attn=none,c3. Any training
override applies to all of them.

example: c3exp bench model=resnet110 attn=none,c3 bench.steps=15
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from c3exp.cli.options import command
from c3exp.errors import fail
from c3exp.paths import config_dir


def help_text() -> str:
    """The usage, this docstring, and the bench.* settings as conf/bench.yaml writes them, with their comments."""
    lines = (config_dir() / "bench.yaml").read_text().split("\nbench:\n", 1)[1].splitlines()
    settings = [f"  bench.{line.strip().replace(': ', '=', 1)}" for line in lines if line.startswith("  ")]
    return "\n".join(["usage: c3exp bench [key=value | key=a,b ...]", "", __doc__.strip(), "",
                      "options (conf/bench.yaml):", *settings])


def run(args: list[str]) -> dict[str, Any]:
    from hydra.errors import HydraException

    from c3exp.bench.run import bench

    try:
        return bench(args)
    except HydraException as err:  # e.g. a _target_ that does not import: Hydra's first line is the useful one
        fail(str(err).splitlines()[0])


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    return command(argv, help_text, run)
