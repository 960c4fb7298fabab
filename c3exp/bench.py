"""`python -m c3exp.bench model=resnet110 attn=none,c3 [bench.*=...]`: training throughput, interleaved.

Comma-separated overrides (`attn=none,c3`, `model=resnet20,resnet110`, `bench.precision=32,bf16-mixed`)
define the configurations, their product in the order given. Every configuration is built once in
this process; after warm-up, full training steps (forward, backward, optimizer step) of all of them
alternate round-robin, each step timed, so a change of load on the machine hits every
configuration alike. bench.mode=loop instead alternates blocks of Lightning's Trainer.fit and of a
bare PyTorch loop on the same network, batches and optimizer. Raw step times, the machine and the
date go to outputs/bench/bench.json (bench.path).
"""
from __future__ import annotations

import datetime
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from lightning.fabric.utilities import move_data_to_device
from omegaconf import DictConfig, OmegaConf, open_dict

from c3exp.cli import fail, printed_help, run_reporting_user_errors
from c3exp.config import compose
from c3exp.errors import ConfigError, check
from c3exp.results import write_json
from c3exp.tasks import TaskModule, build_network, build_task
from c3exp.utils.complexity import data_input_shape, model_complexity
from c3exp.utils.memory import keep_freed_memory

MODES = ("steps", "loop")
DEVICES = ("cpu", "cuda")
AUTOCAST_DTYPES = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# Settings shared by every configuration of one run (the rest may differ between configurations).
PROCESS_KEYS = ("mode", "device", "threads", "keep_freed_memory", "peak", "warmup", "steps", "rounds", "seed", "path")
# A training step costs about 3 forward passes (the backward pass about 2), 2 FLOPs per multiply-accumulate.
TRAIN_FLOPS_PER_MAC = 3 * 2

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class BenchSettings:
    """The validated `bench` group of one configuration; null speed options defer to the model/trainer config."""

    mode: str
    device: str
    batch_size: int
    precision: str
    channels_last: bool
    compile: bool
    threads: int | None
    keep_freed_memory: bool
    peak: bool
    warmup: int
    steps: int
    rounds: int
    seed: int
    path: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BenchSettings:
        node = cfg.bench
        settings = cls(
            mode=node.mode,
            device=node.device,
            batch_size=node.batch_size,
            precision=str(cfg.trainer.precision if node.precision is None else node.precision),
            channels_last=_default(node.channels_last, cfg.model.get("channels_last", False)),
            compile=_default(node.compile, cfg.model.get("compile", False)),
            threads=node.threads,
            keep_freed_memory=node.keep_freed_memory,
            peak=node.peak,
            warmup=node.warmup,
            steps=node.steps,
            rounds=node.rounds,
            seed=node.seed,
            path=str(node.path),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        check(self.mode in MODES, "bench.mode", self.mode, MODES)
        check(self.device in DEVICES, "bench.device", self.device, DEVICES)
        check(self.device != "cuda" or torch.cuda.is_available(), "bench.device", self.device, "cpu (no CUDA device is visible)")
        check(self.precision in AUTOCAST_DTYPES, "bench.precision", self.precision, list(AUTOCAST_DTYPES))
        # Lightning trains 16-mixed as bf16-mixed on a CPU: timing fp16 there would time another run.
        check(self.device == "cuda" or self.precision != "16-mixed", "bench.precision", self.precision,
              "32 or bf16-mixed on a CPU (Lightning turns 16-mixed into bf16-mixed there)")
        for key in ("channels_last", "compile"):
            check(isinstance(getattr(self, key), bool), f"bench.{key}", getattr(self, key), "true, false or null")
        check(isinstance(self.keep_freed_memory, bool), "bench.keep_freed_memory", self.keep_freed_memory, "true or false")
        check(isinstance(self.peak, bool), "bench.peak", self.peak, "true or false")
        check(self.threads is None or _count(self.threads, 1), "bench.threads", self.threads, "null or an integer >= 1")
        for key, low in (("batch_size", 1), ("warmup", 0), ("steps", 2), ("rounds", 1)):
            check(_count(getattr(self, key), low), f"bench.{key}", getattr(self, key), f"an integer >= {low}")
        check(_count(self.seed, 0), "bench.seed", self.seed, "an integer >= 0")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES[self.precision]

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (as Lightning's 16-mixed does); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device) if self.precision == "16-mixed" else None


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _count(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# ----------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: its label (the overrides that vary), its composed config and settings."""

    label: str
    overrides: list[str]
    cfg: DictConfig
    settings: BenchSettings


def expand_overrides(args: Sequence[str]) -> list[list[str]]:
    """One override list per configuration: the product of the values of every comma-separated override."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(args))
    except HydraException as err:
        raise ConfigError("override", " ".join(args), f"key=value or key=a,b ({str(err).splitlines()[0]})") from None
    choices = []
    for arg, override in zip(args, parsed):
        if not override.is_sweep_override():
            choices.append([arg])
            continue
        check(override.is_choice_sweep(), override.get_key_element(), override.value(), "a comma-separated list of values")
        choices.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
    return [list(combination) for combination in itertools.product(*choices)]


def config_label(overrides: list[str], varying: list[int]) -> str:
    """The overrides that differ between configurations, else the group choices (`model=resnet20`)."""
    chosen = [overrides[i] for i in varying] or [o for o in overrides if "." not in o.partition("=")[0]]
    return " ".join(chosen) or "defaults"


def configurations(args: Sequence[str]) -> list[BenchConfig]:
    """Compose every configuration, with the bench speed options written into its model config."""
    expanded = expand_overrides(args)
    varying = [i for i in range(len(args)) if len({overrides[i] for overrides in expanded}) > 1]
    configs = []
    for overrides in expanded:
        cfg = compose(overrides)
        settings = BenchSettings.from_config(cfg)
        with open_dict(cfg):
            cfg.model.channels_last, cfg.model.compile = settings.channels_last, settings.compile
        configs.append(BenchConfig(config_label(overrides, varying), overrides, cfg, settings))
    for key in PROCESS_KEYS:
        values = {getattr(c.settings, key) for c in configs}
        check(len(values) == 1, f"bench.{key}", sorted(values, key=str), "one value for all configurations of a run")
    return configs


# ----------------------------------------------------------------------------------------------
# Training steps


@dataclass
class Trainee:
    """A task's module, its optimizer and one synthetic batch on the device: what one timed step needs."""

    module: TaskModule
    optimizer: torch.optim.Optimizer
    batch: Batch
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def step(self) -> torch.Tensor:
        return train_step(self.module, self.optimizer, self.batch, self.autocast_dtype, self.scaler)


def train_step(
    module: TaskModule,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    autocast_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One full step as Lightning's automatic optimisation does it: zero grads, the task's loss, backward, step."""
    images = batch[0]
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = module.model_step(batch)[0]
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss


def synthetic_batch(cfg: DictConfig, module: TaskModule, settings: BenchSettings, generator: torch.Generator) -> Batch:
    """Standardised random images of the data config's shape and the task's kind of targets, on the device."""
    shape = (settings.batch_size, *data_input_shape(cfg.data)[1:])
    images = torch.randn(shape, generator=generator)
    targets = move_data_to_device(module.random_targets(images, generator), settings.device)  # a tensor or a list of dicts
    images = images.to(settings.device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def build_module(config: BenchConfig, compile_here: bool = True) -> TaskModule:
    """The task module around the network training would build, seeded, on the device, compiled if asked.

    compile_here=False leaves compiling to TaskModule.configure_model, as in training.
    """
    torch.manual_seed(config.settings.seed)
    run_config = {"model": OmegaConf.to_container(config.cfg.model, resolve=True)}
    module = build_task(config.cfg, run_config=run_config).to(config.settings.device).train()
    if config.settings.compile and compile_here:
        module.net.compile()
    return module


def make_trainee(config: BenchConfig) -> Trainee:
    module = build_module(config)
    settings = config.settings
    optimizer = instantiate(config.cfg.optim.optimizer)(params=module.net.parameters())
    scaler = settings.grad_scaler()
    batch = synthetic_batch(config.cfg, module, settings, torch.Generator().manual_seed(settings.seed))
    return Trainee(module, optimizer, batch, settings.autocast_dtype, scaler)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], object], device: str) -> float:
    """Seconds of one call, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def interleave(steps: Sequence[Callable[[], object]], warmup: int, count: int, device: str) -> list[list[float]]:
    """`warmup` untimed then `count` timed calls of every step, round-robin; round r starts at step r mod n."""
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for round_index in range(count):
        for offset in range(len(steps)):
            i = (round_index + offset) % len(steps)
            times[i].append(timed(steps[i], device))
    return times


# ----------------------------------------------------------------------------------------------
# Lightning loop against a bare loop


class BatchList:
    """The same synthetic batches for both loops; a class, as Lightning reads a plain list as several loaders."""

    def __init__(self, batch: Batch, count: int):
        self.batch, self.count = batch, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Batch]:
        return itertools.repeat(self.batch, self.count)


def _step_clock(device: str):
    """A Lightning callback recording the start of every training batch (imported lazily with Lightning)."""
    import lightning as L

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            synchronize(device)
            self.starts.append(time.perf_counter())

    return StepClock()


def between_starts(starts: Sequence[float], skip: int) -> list[float]:
    """Durations of whole loop iterations: from one batch's start to the next one's, after `skip` iterations."""
    return [b - a for a, b in zip(starts, starts[1:])][skip:]


def lightning_block(config: BenchConfig, module: TaskModule, batches: BatchList) -> list[float]:
    """Trainer.fit on `batches` with logging, checkpointing, progress bar and validation off."""
    import lightning as L

    settings = config.settings
    clock = _step_clock(settings.device)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="gpu" if settings.device == "cuda" else "cpu",
            devices=1,
            precision=settings.precision,
            max_steps=len(batches),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[clock],
            default_root_dir=root,
        )
        trainer.fit(module, train_dataloaders=batches)
    return between_starts(clock.starts, config.settings.warmup)


def bare_block(config: BenchConfig, module: TaskModule, batches: BatchList) -> list[float]:
    """The same steps in a hand-written loop, with a fresh optimizer as every fit has."""
    settings = config.settings
    optimizer = instantiate(config.cfg.optim.optimizer)(params=module.net.parameters())
    scaler = settings.grad_scaler()
    starts = []
    for batch in batches:
        synchronize(settings.device)
        starts.append(time.perf_counter())
        train_step(module, optimizer, batch, settings.autocast_dtype, scaler)
    return between_starts(starts, settings.warmup)


def compare_loops(config: BenchConfig) -> dict[str, list[float]]:
    """Blocks of Lightning and bare steps, alternating (who goes first alternates too), `rounds` of each.

    Each block runs warmup + steps + 1 batches and times the `steps` iterations after the warm-up.
    """
    settings = config.settings
    modules = {"lightning": build_module(config, compile_here=False), "bare": build_module(config)}
    batch = synthetic_batch(config.cfg, modules["bare"], settings, torch.Generator().manual_seed(settings.seed))
    batches = BatchList(batch, settings.warmup + settings.steps + 1)
    blocks = {"lightning": lightning_block, "bare": bare_block}
    times: dict[str, list[float]] = {"lightning": [], "bare": []}
    for round_index in range(settings.rounds):
        order = ("lightning", "bare") if round_index % 2 == 0 else ("bare", "lightning")
        for name in order:
            times[name] += blocks[name](config, modules[name], batches)
    return times


# ----------------------------------------------------------------------------------------------
# Statistics, machine, report


def summarise(times: Sequence[float], batch_size: int) -> dict[str, float]:
    """Median, spread (min, quartiles, max) and throughput of one configuration's step times."""
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "q1_s": q1,
        "q3_s": q3,
        "max_s": max(times),
        "images_per_s": batch_size / median,
        "images_per_s_best": batch_size / min(times),
    }


def ratios(summary: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    return {"ratio_median": summary["median_s"] / reference["median_s"], "ratio_min": summary["min_s"] / reference["min_s"]}


def paired_ratios(times: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Median and quartiles of the ratios of steps taken in the same round.

    A round times every configuration back to back, so a slow or fast phase of a shared machine
    moves the whole round and cancels out of its ratio; the ratio of two medians (or of two
    fastest steps, each from whichever round was luckiest) keeps that noise.
    """
    per_round = [t / r for t, r in zip(times, reference)]
    q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1 else per_round * 3
    return {"ratio_paired": median, "ratio_paired_q1": q1, "ratio_paired_q3": q3}


def block_medians(times: Sequence[float], rounds: int) -> list[float]:
    """The median step of each of `rounds` equal blocks of loop mode's times (one block per round)."""
    size = len(times) // rounds
    return [statistics.median(times[i * size : (i + 1) * size]) for i in range(rounds)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, Any]:
    """What the numbers depend on: processor, cores, threads, library versions, accelerator, load."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def complexity(config: BenchConfig) -> dict[str, int]:
    return model_complexity(build_network(config.cfg), config.cfg.data)


def matmul_peak(settings: BenchSettings, size: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """The device's measured dense matmul rate in the bench precision: the yardstick for "fraction of peak".

    A square product large enough to saturate the device, fastest of `repeats`; bf16/fp16 under
    mixed precision, float32 otherwise (on CUDA with PyTorch's default TF32 setting for float32).
    """
    size = size or (8192 if settings.device == "cuda" else 1024)
    dtype = settings.autocast_dtype or torch.float32
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    a, b = (torch.randn(size, size, device=settings.device, dtype=dtype, generator=generator) for _ in range(2))
    for _ in range(2):
        a @ b
    seconds = min(timed(lambda: a @ b, settings.device) for _ in range(repeats))
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "tflops": 2 * size**3 / seconds / 1e12}


def achieved(row: dict[str, Any], peak: dict[str, Any] | None) -> dict[str, float]:
    """Effective training FLOP/s at the fastest step (TRAIN_FLOPS_PER_MAC x MACs per image), and the 50k-image epoch it implies.

    Effective: counted from the network's MACs, not from what the kernels execute. Convolution
    algorithms that multiply less (Winograd) can put it above the measured matmul peak.
    """
    images_per_s = row["images_per_s_best"]
    result = {"train_tflops": TRAIN_FLOPS_PER_MAC * row["macs"] * images_per_s / 1e12,
              "epoch_50k_s_derived": 50_000 / images_per_s}
    if peak:
        result["fraction_of_peak"] = result["train_tflops"] / peak["tflops"]
    return result


def format_achieved(rows: list[dict[str, Any]], peak: dict[str, Any] | None) -> str:
    lines = []
    if peak:
        lines.append(f"measured matmul peak: {peak['tflops']:.2f} TFLOP/s ({peak['dtype']}, {peak['size']}x{peak['size']})")
    for row in rows:
        share = f", {row['fraction_of_peak']:.1%} of the measured peak" if "fraction_of_peak" in row else ""
        lines.append(f"{row['label']}: about {row['train_tflops']:.3f} effective TFLOP/s in training (3 x 2 x MACs per image){share}; "
                     f"50k images at the fastest step: {row['epoch_50k_s_derived']:.1f} s")
    return "\n".join(lines)


def run_steps(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    settings = configs[0].settings
    trainees = [make_trainee(config) for config in configs]
    times = interleave([trainee.step for trainee in trainees], settings.warmup, settings.steps, settings.device)
    rows = []
    for config, step_times in zip(configs, times):
        summary = summarise(step_times, config.settings.batch_size)
        rows.append({"label": config.label, "overrides": config.overrides, "settings": asdict(config.settings),
                     **complexity(config), **summary, "step_times_s": step_times})
    for row in rows:
        row.update(ratios(row, rows[0]), **paired_ratios(row["step_times_s"], rows[0]["step_times_s"]))
    return rows


def run_loops(configs: list[BenchConfig]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        times = compare_loops(config)
        summaries = {name: summarise(values, config.settings.batch_size) for name, values in times.items()}
        rows.append({"label": config.label, "overrides": config.overrides, "settings": asdict(config.settings),
                     **complexity(config), **{name: {**summaries[name], "step_times_s": times[name]} for name in times},
                     **ratios(summaries["lightning"], summaries["bare"]),
                     **paired_ratios(*(block_medians(times[name], config.settings.rounds) for name in ("lightning", "bare")))})
    return rows


def format_table(rows: list[dict[str, Any]], mode: str) -> str:
    """One line per configuration (steps) or per configuration and loop (loop)."""
    width = max(len("configuration"), *(len(row["label"]) + (12 if mode == "loop" else 0) for row in rows))
    header = (f"{'configuration':<{width}} {'median ms':>10} {'min ms':>9} {'IQR ms':>15} {'max ms':>9} {'img/s':>8} "
              f"{'x median':>9} {'x min':>7} {'x paired (IQR)':>22}")
    lines = [header]
    for row in rows:
        parts = [(row["label"], row, row)] if mode == "steps" else [
            (f"{row['label']} [{name}]", row[name], row if name == "lightning" else None) for name in ("bare", "lightning")
        ]
        for label, summary, ratio in parts:
            iqr = f"{summary['q1_s'] * 1e3:.1f}-{summary['q3_s'] * 1e3:.1f}"
            ratio_text = f"{ratio['ratio_median']:>9.3f} {ratio['ratio_min']:>7.3f}" if ratio else f"{'1':>9} {'1':>7}"
            paired = f"{ratio['ratio_paired']:.3f} ({ratio['ratio_paired_q1']:.3f}-{ratio['ratio_paired_q3']:.3f})" if ratio else "1"
            ratio_text += f" {paired:>22}"
            lines.append(
                f"{label:<{width}} {summary['median_s'] * 1e3:>10.1f} {summary['min_s'] * 1e3:>9.1f} {iqr:>15} "
                f"{summary['max_s'] * 1e3:>9.1f} {summary['images_per_s']:>8.1f} {ratio_text}"
            )
    return "\n".join(lines)


def bench(args: Sequence[str]) -> dict[str, Any]:
    """Run the benchmark the overrides describe, print the table, write bench.json; return its content."""
    configs = configurations(args)
    settings = configs[0].settings
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    kept = keep_freed_memory() if settings.keep_freed_memory else False
    if settings.device == "cuda":
        torch.backends.cudnn.benchmark = True
    started = datetime.datetime.now(datetime.timezone.utc)
    machine_before = machine(settings.device)
    rows = run_steps(configs) if settings.mode == "steps" else run_loops(configs)
    peak = matmul_peak(settings) if settings.peak else None
    if settings.mode == "steps":
        for row in rows:
            row.update(achieved(row, peak))
    report = {
        "command": "python -m c3exp.bench " + " ".join(args),
        "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "mode": settings.mode,
        "machine": {**machine_before, "keep_freed_memory": kept, "matmul_peak": peak},
        "load_average_end": machine(settings.device)["load_average"],
        "configurations": rows,
    }
    print(format_table(rows, settings.mode))
    if settings.mode == "steps":
        print(format_achieved(rows, peak))
    print(f"wrote {write_json(Path(settings.path), report)}")
    return report


HELP = """\
usage: python -m c3exp.bench [key=value | key=a,b ...]

Training throughput of one or more configurations, timed interleaved in one process on synthetic
batches; prints a table (ratios to the first configuration: of the medians, of the fastest steps,
and the median of same-round ratios, "x paired"; in loop mode, of the two loops' block medians
per round) and writes the raw step times, machine and date to bench.path.
Comma-separated values define the configurations (their product, in the order given).

  model=NAME, attn=NAME         the networks, e.g. model=resnet20,resnet110 attn=none,c3
  bench.mode=steps|loop         steps: round-robin training steps; loop: Lightning's Trainer.fit vs a bare loop
  bench.device=cpu|cuda         where the steps run (default cpu)
  bench.precision=32|bf16-mixed|16-mixed         default: trainer.precision
  bench.batch_size=128 bench.warmup=3 bench.steps=10 bench.rounds=3 (loop mode)
  bench.channels_last=true|false bench.compile=true|false   default: as the model config says
  bench.threads=N               torch threads (default: PyTorch's, one per core)
  bench.peak=true               also time a large matmul: each configuration's share of the measured peak
  bench.path=PATH               where the JSON goes (default outputs/bench/bench.json)

example: python -m c3exp.bench model=resnet110 attn=none,c3 bench.steps=15"""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark the command line describes; -h/--help: print the usage."""
    args = list(sys.argv[1:] if argv is None else argv)
    if printed_help(args, HELP):
        return
    try:
        run_reporting_user_errors(lambda: bench(args))
    except HydraException as err:  # e.g. an unknown key: Hydra's first line is the useful one
        fail(str(err).splitlines()[0])


if __name__ == "__main__":
    main()
