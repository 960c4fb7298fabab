"""What a run shows and keeps: the printed tables and a JSON file of its own (runs never overwrite each other)."""
from __future__ import annotations

import contextlib
import datetime
import itertools
import os
from pathlib import Path
from typing import Any

#: Where a run's JSON goes unless bench.path names a file (relative to the working directory).
REPORT_DIR = Path("outputs") / "bench"


def new_report_path(started: datetime.datetime, folder: Path = REPORT_DIR) -> Path:
    """<UTC start>-p<pid>.json (-2, -3... if taken), created exclusively: two runs never share one file."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{started.astimezone(datetime.timezone.utc):%Y%m%d-%H%M%S}-p{os.getpid()}"
    for number in itertools.count(1):
        path = folder / (f"{stem}.json" if number == 1 else f"{stem}-{number}.json")
        with contextlib.suppress(FileExistsError):
            path.open("x").close()
            return path


def format_table(rows: list[dict[str, Any]], mode: str) -> str:
    """One line per configuration (steps) or per configuration and loop (loop), with ratios to the reference."""
    parts = [(row["label"], row, row) for row in rows] if mode == "steps" else [
        (f"{row['label']} [{name}]", row[name], row if name == "lightning" else None)
        for row in rows for name in ("bare", "lightning")]
    width = max(len(label) for label, _, _ in [("configuration", None, None), *parts])
    lines = [f"{'configuration':<{width}} {'median ms':>10} {'min ms':>9} {'IQR ms':>15} {'max ms':>9} {'img/s':>8} "
             f"{'x median':>9} {'x min':>7} {'x paired (IQR)':>22}"]
    for label, s, r in parts:
        iqr = f"{s['q1_s'] * 1e3:.1f}-{s['q3_s'] * 1e3:.1f}"
        # the loop-mode reference (bare) shows 1 for every ratio
        ratios = f"{r['ratio_median']:>9.3f} {r['ratio_min']:>7.3f}" if r else f"{'1':>9} {'1':>7}"
        paired = f"{r['ratio_paired']:.3f} ({r['ratio_paired_q1']:.3f}-{r['ratio_paired_q3']:.3f})" if r else "1"
        lines.append(f"{label:<{width}} {s['median_s'] * 1e3:>10.1f} {s['min_s'] * 1e3:>9.1f} {iqr:>15} "
                     f"{s['max_s'] * 1e3:>9.1f} {s['images_per_s']:>8.1f} {ratios} {paired:>22}")
    return "\n".join(lines)


def format_achieved(rows: list[dict[str, Any]], peak: dict[str, Any] | None) -> str:
    """Steps mode's second table: effective TFLOP/s, share of the matmul peak, the 50k-image epoch."""
    lines = []
    if peak:
        lines.append(f"measured matmul peak: {peak['tflops']:.2f} TFLOP/s ({peak['dtype']}, "
                     f"{peak['size']}x{peak['size']})")
    for row in rows:
        share = f", {row['fraction_of_peak']:.1%} of the measured peak" if "fraction_of_peak" in row else ""
        lines.append(f"{row['label']}: about {row['train_tflops']:.3f} effective TFLOP/s in training (3 x 2 x MACs per "
                     f"image){share}; 50k images at the fastest step: {row['epoch_50k_s_derived']:.1f} s")
    return "\n".join(lines)
