"""`python -m c3exp.demo` (`make demo`): ResNet-20 without and with C3 on the bundled digits, on the CPU.

Runs the two trainings as ordinary CLI runs (so their run directories are normal ones) and prints a
small comparison table from their results.json files.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from c3exp.results import RESULTS_FILE, read_results

ATTNS = ("none", "c3")
COLUMNS = (("attn", "{}"), ("params", "{:,}"), ("macs", "{:,}"), ("best_val_acc1", "{:.4f}"),
           ("test_acc1", "{:.4f}"), ("train_images_per_sec", "{:.0f}"), ("wall_seconds", "{:.0f}"))


def run(attn: str, root: Path, extra: list[str]) -> dict:
    run_dir = root / attn
    cmd = [sys.executable, "-m", "c3exp", "experiment=quickstart", f"attn={attn}",
           "trainer.enable_progress_bar=false", "resume=never", f"hydra.run.dir={run_dir}", *extra]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return read_results(run_dir / RESULTS_FILE)


def table(rows: list[dict]) -> str:
    header = " | ".join(name for name, _ in COLUMNS)
    lines = [header, " | ".join("---" for _ in COLUMNS)]
    lines += [" | ".join(fmt.format(row[name]) for name, fmt in COLUMNS) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)
    root = Path("outputs/demo")
    rows = [run(attn, root, extra) for attn in ATTNS]
    print("\nResNet-20 on digits (5 epochs, CPU):\n" + table(rows))


if __name__ == "__main__":
    main()
