"""How long the CLI takes to answer a configuration question, from a fresh process each time.

    python benchmarks/cli_latency.py [--repeats 5]
    PYTHONPATH=/path/to/other/checkout python benchmarks/cli_latency.py   # another version, same environment

Each command runs `--repeats` times, round-robin, in a new `python` process from an empty folder;
the table gives the median and the fastest wall time. For scale, the last row imports torch,
torchvision and Lightning, which a command that trains must pay and a configuration question must not.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "--help": ["-m", "c3exp", "--help"],
    "--cfg job": ["-m", "c3exp", "--cfg", "job", "model=resnet110", "attn=c3"],
    "unknown group choice (data: imagenet)": ["-m", "c3exp", "data=imagenet"],
    "unknown key (optim.lr=0.1)": ["-m", "c3exp", "optim.lr=0.1"],
    "bad value (optim.optimizer.lr=-1)": ["-m", "c3exp", "data=digits", "optim.optimizer.lr=-1"],
    "bad sweep value (-m, attn: none then sk)": ["-m", "c3exp", "-m", "attn=none,sk"],
    **{f"{command} --help": ["-m", f"c3exp.{command}", "--help"]
       for command in ("eval", "report", "summary", "analyze", "bench", "demo")},
    "for scale: import torch, torchvision, lightning": ["-c", "import torch, torchvision, lightning"],
}


def wall_seconds(args: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeats):
            for name, args in COMMANDS.items():
                times[name].append(wall_seconds(args, cwd))
    print("| command | median (s) | fastest (s) |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    main()
