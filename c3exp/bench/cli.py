"""`python -m c3exp.bench`'s command line: usage, and user errors as one line with exit status 2."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from hydra.errors import HydraException

from c3exp.bench.run import bench
from c3exp.cli import fail, printed_help, run_reporting_user_errors

HELP = """\
usage: python -m c3exp.bench [key=value | key=a,b ...]

Training throughput of one or more configurations, timed interleaved in one process on synthetic
batches; prints a table (ratios to the first configuration: of the medians, of the fastest steps,
and the median of same-round ratios, "x paired"; in loop mode, of the two loops' block medians
per round) and writes the raw step times, machine and date to a new JSON file (or bench.path).
Comma-separated values define the configurations (their product, in the order given).

  model=NAME, attn=NAME         the networks, e.g. model=resnet20,resnet110 attn=none,c3
  bench.mode=steps|loop         steps: round-robin training steps; loop: Lightning's Trainer.fit vs a bare loop
  bench.device=cpu|cuda         where the steps run (default cpu)
  bench.precision=32|bf16-mixed|16-mixed         default: trainer.precision
  bench.batch_size=128 bench.warmup=3 bench.steps=10 bench.rounds=3 (loop mode)
  bench.channels_last=true|false bench.compile=true|false   default: as the model config says
  bench.threads=N               torch threads (default: PyTorch's, one per core)
  bench.peak=true               also time a large matmul: each configuration's share of the measured peak
  bench.path=PATH               where the JSON goes (default: a new outputs/bench/<UTC date-time>-p<pid>.json every run)

example: python -m c3exp.bench model=resnet110 attn=none,c3 bench.steps=15"""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark the command line describes; -h/--help: print the usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    if printed_help(args, HELP):
        return
    try:
        run_reporting_user_errors(lambda: bench(args))
    except HydraException as err:  # e.g. a bad group choice: Hydra's first line is the useful one
        fail(str(err).splitlines()[0])
