"""ResNet-20 without and with C3 on the bundled digits, on the CPU, then a comparison table (`make demo`).

Runs the two trainings as ordinary runs of c3exp train (experiment=quickstart, run folders outputs/demo/none
and outputs/demo/c3) and prints a small comparison table from their results.json files. Every key=value is
an override for both runs (e.g. trainer.max_epochs=1); the title names what actually ran.

example: c3exp demo trainer.max_epochs=1
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from c3exp.cli.options import command, help_text
from c3exp.results import RESULTS_FILE, hydra_config, read_results

ATTNS = ("none", "c3")
ROOT = Path("outputs/demo")
COLUMNS = (("attn", "{}"), ("params", "{:,}"), ("macs", "{:,}"), ("best_val_acc1", "{:.4f}"),
           ("test_acc1", "{:.4f}"), ("train_images_per_sec", "{:.0f}"), ("wall_seconds", "{:.0f}"))


def run(attn: str, extra: list[str]) -> dict:
    """One training run; a failed one ends the demo with its exit status (it has printed its error)."""
    run_dir = ROOT / attn
    cmd = [sys.executable, "-m", "c3exp", "experiment=quickstart", f"attn={attn}",
           "trainer.enable_progress_bar=false", "resume=never", f"hydra.run.dir={run_dir}", *extra]
    print("$ python", shlex.join(cmd[1:]), flush=True)
    if status := subprocess.run(cmd).returncode:
        raise SystemExit(status)
    accelerator = (hydra_config(run_dir).get("trainer") or {}).get("accelerator")  # as Hydra saved the run's config
    return {**read_results(run_dir / RESULTS_FILE), "accelerator": accelerator}


def _joined(values: list) -> str:
    return "/".join(str(value) for value in dict.fromkeys(values))


def title(rows: list[dict]) -> str:
    """'ResNet-20 on digits (5 epochs, CPU)' from what the runs recorded, not from the defaults."""
    epochs = _joined([row.get("epochs", row.get("max_epochs")) for row in rows])
    devices = _joined([row["accelerator"].upper() for row in rows if row.get("accelerator")])
    details = [f"{epochs} epoch{'s' * (epochs != '1')}"] + ([devices] if devices else [])
    models = _joined([re.sub(r"^resnet(\d+)$", r"ResNet-\1", row["model"]) for row in rows])  # as the paper writes it
    return f"{models} on {_joined([row['data'] for row in rows])} ({', '.join(details)})"


def run_both(extra: list[str]) -> str:
    """Both runs, then the table; returns the table."""
    from c3exp.report.markdown import markdown_table

    rows = [run(attn, extra) for attn in ATTNS]
    cells = [[fmt.format(row[name]) for name, fmt in COLUMNS] for row in rows]
    text = f"{title(rows)}:\n{markdown_table([name for name, _ in COLUMNS], cells)}"
    print(f"\n{text}")
    return text


def main(argv: Sequence[str] | None = None) -> str | None:
    return command(argv, lambda: help_text("demo", __doc__), run_both)
