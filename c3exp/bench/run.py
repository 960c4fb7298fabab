"""One bench run: set the process up, time every configuration, print the tables, write the JSON of its own."""
from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from c3exp.bench.configs import BenchConfig, BenchSettings, configurations
from c3exp.bench.steps import compare_loops, interleave, synchronize, trainee_step
from c3exp.results import write_json
from c3exp.tasks import build_network
from c3exp.utils.complexity import model_complexity
from c3exp.utils.memory import keep_freed_memory

REPORT_DIR = Path("outputs") / "bench"  # where a run's JSON goes unless bench.path names a file
TRAIN_FLOPS_PER_MAC = 3 * 2  # a training step: about 3 forward passes (backward: 2), 2 FLOPs per multiply-add


def summarise(times: Sequence[float], batch_size: int) -> dict[str, float]:
    """Median, spread (min, quartiles, max) and throughput of one configuration's step times."""
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_s": median, "min_s": min(times), "q1_s": q1, "q3_s": q3, "max_s": max(times),
            "images_per_s": batch_size / median, "images_per_s_best": batch_size / min(times)}


def ratios(summary: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """The ratios of the medians and of the fastest steps to the reference configuration's."""
    return {"ratio_median": summary["median_s"] / reference["median_s"],
            "ratio_min": summary["min_s"] / reference["min_s"]}


def paired_ratios(times: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Quartiles of per-round ratios: a slow phase of a shared machine moves a whole round and cancels out of it."""
    per_round = [t / r for t, r in zip(times, reference)]
    q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1 else per_round * 3
    return {"ratio_paired": median, "ratio_paired_q1": q1, "ratio_paired_q3": q3}


def achieved(row: dict[str, Any], peak: dict[str, Any] | None) -> dict[str, float]:
    """Training FLOP/s at the fastest step, from MACs (Winograd may beat the matmul peak), and its 50k-image epoch."""
    tflops = TRAIN_FLOPS_PER_MAC * row["macs"] * row["images_per_s_best"] / 1e12
    return {"train_tflops": tflops, "epoch_50k_s_derived": 50_000 / row["images_per_s_best"],
            **({"fraction_of_peak": tflops / peak["tflops"]} if peak else {})}


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
        memory = f"; a step allocates {row['step_peak_mib']:.0f} MiB at its peak" if "step_peak_mib" in row else ""
        lines.append(f"{row['label']}: about {row['train_tflops']:.3f} effective TFLOP/s in training (3 x 2 x MACs per "
                     f"image){share}; 50k images at the fastest step: {row['epoch_50k_s_derived']:.1f} s{memory}")
    return "\n".join(lines)


def cpu_model() -> str:
    """The processor's name (from /proc/cpuinfo on Linux), else what the platform module knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, where the OS has them: other work skews the times."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine(device: str) -> dict[str, Any]:
    """What the numbers depend on: processor, cores, threads, library versions, accelerator, load."""
    cuda = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda} if device == "cuda" else {}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "load_average": load_average(), **cuda}


def matmul_peak(settings: BenchSettings, repeats: int = 10) -> dict[str, Any]:
    """Fastest of `repeats` saturating matmuls in the bench precision (TF32 default for float32): "fraction of peak"."""
    size = 8192 if settings.device == "cuda" else 1024
    dtype = settings.autocast_dtype or torch.float32
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    a, b = (torch.randn(size, size, device=settings.device, dtype=dtype, generator=generator) for _ in range(2))
    seconds = min(interleave([lambda: a @ b], 2, repeats, settings.device)[0])  # after two warm-up products
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "tflops": 2 * size**3 / seconds / 1e12}


def describe(config: BenchConfig) -> dict[str, Any]:
    """The part of a configuration's row that is not a time: label, overrides, settings, parameters and MACs."""
    return {"label": config.label, "overrides": config.overrides, "settings": asdict(config.settings),
            **model_complexity(build_network(config.cfg), config.cfg.data)}


def step_memory(step: Callable[[], object], device: str) -> dict[str, float]:
    """The GPU memory one call of `step` allocates on top of what is allocated before it (run alone), in MiB."""
    if device != "cuda":
        return {}
    synchronize(device)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    synchronize(device)
    return {"step_peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}


def run_steps(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    """Interleaved training steps of every configuration; ratios to the first."""
    settings = configs[0].settings
    steps = [trainee_step(config) for config in configs]
    memory = [step_memory(step, settings.device) for step in steps]  # a first, untimed step of each, alone
    times = interleave(steps, settings.warmup, settings.steps, settings.device)
    rows = [{**describe(config), **summarise(step_times, config.settings.batch_size), "step_times_s": step_times,
             **step_peak} for config, step_times, step_peak in zip(configs, times, memory)]
    for row in rows:
        row.update(ratios(row, rows[0]), **paired_ratios(row["step_times_s"], rows[0]["step_times_s"]))
    return rows


def loop_row(config: BenchConfig) -> dict[str, Any]:
    """Both loops' summaries and the ratios Lightning / bare (paired by round: one block each)."""
    times, steps = compare_loops(config), config.settings.steps
    loops = {name: {**summarise(values, config.settings.batch_size), "step_times_s": values}
             for name, values in times.items()}
    medians = {name: [statistics.median(values[i : i + steps]) for i in range(0, len(values), steps)]
               for name, values in times.items()}  # of each round's block
    return {**describe(config), **loops, **ratios(loops["lightning"], loops["bare"]),
            **paired_ratios(medians["lightning"], medians["bare"])}


def bench(args: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark the overrides describe, print the tables, write the JSON; return its content."""
    configs = configurations(args)
    settings = configs[0].settings
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    kept = settings.keep_freed_memory and keep_freed_memory()
    torch.backends.cudnn.benchmark = settings.device == "cuda"
    started = datetime.datetime.now(datetime.timezone.utc)
    machine_before = machine(settings.device)
    rows = run_steps(configs) if settings.mode == "steps" else [loop_row(config) for config in configs]
    peak = matmul_peak(settings) if settings.peak else None
    for row in rows if settings.mode == "steps" else []:
        row.update(achieved(row, peak))
    report = {"command": "c3exp bench " + " ".join(args), "date": started.isoformat(timespec="seconds"),
              "seconds": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
              "mode": settings.mode,
              "machine": {**machine_before, "keep_freed_memory": kept, "matmul_peak": peak},
              "load_average_end": load_average(), "configurations": rows}
    print(format_table(rows, settings.mode))
    if settings.mode == "steps":
        print(format_achieved(rows, peak))
    # bench.path: that file, replaced; else a new one
    print(f"wrote {write_json(Path(settings.path) if settings.path else new_report_path(started), report)}")
    return report
