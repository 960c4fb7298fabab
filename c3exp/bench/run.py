"""One bench run: set the process up, time every configuration, print the tables, write the JSON."""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from c3exp.bench.configs import BenchConfig, configurations
from c3exp.bench.loops import LOOPS, compare_loops
from c3exp.bench.machine import load_average, machine, matmul_peak
from c3exp.bench.output import format_achieved, format_table, write_report
from c3exp.bench.settings import BenchSettings
from c3exp.bench.stats import achieved, block_medians, paired_ratios, ratios, summarise
from c3exp.bench.steps import make_trainee
from c3exp.bench.timing import interleave
from c3exp.tasks import build_network
from c3exp.utils.complexity import model_complexity
from c3exp.utils.memory import keep_freed_memory


def complexity(config: BenchConfig) -> dict[str, int]:
    """Parameters and MACs per image of the configuration's network."""
    return model_complexity(build_network(config.cfg), config.cfg.data)


def describe(config: BenchConfig) -> dict[str, Any]:
    """The part of a configuration's row that is not a time: label, overrides, settings, size."""
    return {"label": config.label, "overrides": config.overrides, "settings": asdict(config.settings), **complexity(config)}


def run_steps(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    """Interleaved training steps of every configuration; ratios to the first."""
    settings = configs[0].settings
    trainees = [make_trainee(config) for config in configs]
    times = interleave([trainee.step for trainee in trainees], settings.warmup, settings.steps, settings.device)
    rows = [{**describe(config), **summarise(step_times, config.settings.batch_size), "step_times_s": step_times}
            for config, step_times in zip(configs, times)]
    for row in rows:
        row.update(ratios(row, rows[0]), **paired_ratios(row["step_times_s"], rows[0]["step_times_s"]))
    return rows


def loop_row(config: BenchConfig, times: dict[str, list[float]]) -> dict[str, Any]:
    """Both loops' summaries and the ratios Lightning / bare (paired by round: one block each)."""
    summaries = {name: summarise(values, config.settings.batch_size) for name, values in times.items()}
    return {
        **describe(config),
        **{name: {**summaries[name], "step_times_s": times[name]} for name in times},
        **ratios(summaries["lightning"], summaries["bare"]),
        **paired_ratios(*(block_medians(times[name], config.settings.rounds) for name in LOOPS)),
    }


def run_loops(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    """Lightning's loop against a bare loop, for each configuration in turn."""
    return [loop_row(config, compare_loops(config)) for config in configs]


def prepare_process(settings: BenchSettings) -> bool:
    """Threads, allocator and cuDNN autotuning, as the settings ask; True when freed memory is kept."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    kept = keep_freed_memory() if settings.keep_freed_memory else False
    if settings.device == "cuda":
        torch.backends.cudnn.benchmark = True
    return kept


def measure(configs: list[BenchConfig]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of the mode's table and, with bench.peak, the matmul peak (steps rows get achieved FLOP/s)."""
    settings = configs[0].settings
    rows = run_steps(configs) if settings.mode == "steps" else run_loops(configs)
    peak = matmul_peak(settings) if settings.peak else None
    if settings.mode == "steps":
        for row in rows:
            row.update(achieved(row, peak))
    return rows, peak


def bench(args: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark the overrides describe, print the table, write the JSON; return its content."""
    configs = configurations(args)
    settings = configs[0].settings
    kept = prepare_process(settings)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine_before = machine(settings.device)
    rows, peak = measure(configs)
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
    print(f"wrote {write_report(report, settings.path, started)}")
    return report
