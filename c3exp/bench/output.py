"""What a run shows and keeps: the printed tables and a JSON file of its own (runs never overwrite each other)."""
from __future__ import annotations

import datetime
import itertools
import os
from pathlib import Path
from typing import Any

from c3exp.results import write_json

#: Where a run's JSON goes unless bench.path names a file (relative to the working directory).
REPORT_DIR = Path("outputs") / "bench"


def new_report_path(started: datetime.datetime, folder: Path = REPORT_DIR) -> Path:
    """<UTC start>-p<pid>.json (-2, -3... if taken), created exclusively: two runs never share one file."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{started.astimezone(datetime.timezone.utc):%Y%m%d-%H%M%S}-p{os.getpid()}"
    for number in itertools.count(1):
        path = folder / (f"{stem}.json" if number == 1 else f"{stem}-{number}.json")
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def write_report(report: dict[str, Any], path: str | None, started: datetime.datetime) -> Path:
    """Write the report to bench.path when set (replacing that file), else to a new file; return where."""
    return write_json(Path(path) if path else new_report_path(started), report)


def _table_parts(row: dict[str, Any], mode: str) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, summary, ratios or None for the reference) of each line a configuration's row prints."""
    if mode == "steps":
        return [(row["label"], row, row)]
    return [(f"{row['label']} [{name}]", row[name], row if name == "lightning" else None) for name in ("bare", "lightning")]


def _ratio_columns(ratio: dict[str, Any] | None) -> str:
    """x median, x min and x paired (IQR); 1 for the reference."""
    if not ratio:
        return f"{'1':>9} {'1':>7} {'1':>22}"
    paired = f"{ratio['ratio_paired']:.3f} ({ratio['ratio_paired_q1']:.3f}-{ratio['ratio_paired_q3']:.3f})"
    return f"{ratio['ratio_median']:>9.3f} {ratio['ratio_min']:>7.3f} {paired:>22}"


def _table_line(label: str, summary: dict[str, Any], ratio: dict[str, Any] | None, width: int) -> str:
    iqr = f"{summary['q1_s'] * 1e3:.1f}-{summary['q3_s'] * 1e3:.1f}"
    return (f"{label:<{width}} {summary['median_s'] * 1e3:>10.1f} {summary['min_s'] * 1e3:>9.1f} {iqr:>15} "
            f"{summary['max_s'] * 1e3:>9.1f} {summary['images_per_s']:>8.1f} {_ratio_columns(ratio)}")


def format_table(rows: list[dict[str, Any]], mode: str) -> str:
    """One line per configuration (steps) or per configuration and loop (loop)."""
    width = max(len("configuration"), *(len(row["label"]) + (12 if mode == "loop" else 0) for row in rows))
    header = (f"{'configuration':<{width}} {'median ms':>10} {'min ms':>9} {'IQR ms':>15} {'max ms':>9} {'img/s':>8} "
              f"{'x median':>9} {'x min':>7} {'x paired (IQR)':>22}")
    lines = [header]
    for row in rows:
        lines += [_table_line(label, summary, ratio, width) for label, summary, ratio in _table_parts(row, mode)]
    return "\n".join(lines)


def format_achieved(rows: list[dict[str, Any]], peak: dict[str, Any] | None) -> str:
    """Steps mode's second table: effective TFLOP/s, share of the matmul peak, the 50k-image epoch."""
    lines = []
    if peak:
        lines.append(f"measured matmul peak: {peak['tflops']:.2f} TFLOP/s ({peak['dtype']}, {peak['size']}x{peak['size']})")
    for row in rows:
        share = f", {row['fraction_of_peak']:.1%} of the measured peak" if "fraction_of_peak" in row else ""
        lines.append(f"{row['label']}: about {row['train_tflops']:.3f} effective TFLOP/s in training (3 x 2 x MACs per image){share}; "
                     f"50k images at the fastest step: {row['epoch_50k_s_derived']:.1f} s")
    return "\n".join(lines)
