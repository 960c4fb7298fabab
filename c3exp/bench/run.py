"""One bench run: set the process up, time every configuration, print the tables, write the JSON."""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from c3exp.bench.configs import BenchConfig, configurations
from c3exp.bench.loops import compare_loops
from c3exp.bench.output import format_achieved, format_table, new_report_path
from c3exp.bench.settings import BenchSettings
from c3exp.bench.stats import achieved, block_medians, paired_ratios, ratios, summarise
from c3exp.bench.steps import trainee_step
from c3exp.bench.timing import interleave
from c3exp.results import write_json
from c3exp.tasks import build_network
from c3exp.utils.complexity import model_complexity
from c3exp.utils.memory import keep_freed_memory


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


def run_steps(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    """Interleaved training steps of every configuration; ratios to the first."""
    settings = configs[0].settings
    times = interleave([trainee_step(config) for config in configs], settings.warmup, settings.steps, settings.device)
    rows = [{**describe(config), **summarise(step_times, config.settings.batch_size), "step_times_s": step_times}
            for config, step_times in zip(configs, times)]
    for row in rows:
        row.update(ratios(row, rows[0]), **paired_ratios(row["step_times_s"], rows[0]["step_times_s"]))
    return rows


def loop_row(config: BenchConfig) -> dict[str, Any]:
    """Both loops' summaries and the ratios Lightning / bare (paired by round: one block each)."""
    times = compare_loops(config)
    summaries = {name: summarise(values, config.settings.batch_size) for name, values in times.items()}
    return {
        **describe(config),
        **{name: {**summaries[name], "step_times_s": times[name]} for name in times},
        **ratios(summaries["lightning"], summaries["bare"]),
        **paired_ratios(*(block_medians(times[name], config.settings.rounds) for name in ("lightning", "bare"))),
    }


def bench(args: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark the overrides describe, print the tables, write the JSON; return its content."""
    configs = configurations(args)
    settings = configs[0].settings
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    kept = keep_freed_memory() if settings.keep_freed_memory else False
    if settings.device == "cuda":
        torch.backends.cudnn.benchmark = True
    started = datetime.datetime.now(datetime.timezone.utc)
    machine_before = machine(settings.device)
    rows = run_steps(configs) if settings.mode == "steps" else [loop_row(config) for config in configs]
    peak = matmul_peak(settings) if settings.peak else None
    for row in rows if settings.mode == "steps" else []:
        row.update(achieved(row, peak))
    report = {
        "command": "c3exp bench " + " ".join(args),
        "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "mode": settings.mode,
        "machine": {**machine_before, "keep_freed_memory": kept, "matmul_peak": peak},
        "load_average_end": load_average(),
        "configurations": rows,
    }
    print(format_table(rows, settings.mode))
    if settings.mode == "steps":
        print(format_achieved(rows, peak))
    # bench.path: that file, replaced; else a new one
    print(f"wrote {write_json(Path(settings.path) if settings.path else new_report_path(started), report)}")
    return report
