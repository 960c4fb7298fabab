"""The bench's own settings (`bench.*`), validated once, so a bad value is one line before anything is built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from c3exp.errors import check, is_int

MODES = ("steps", "loop")
DEVICES = ("cpu", "cuda")
AUTOCAST_DTYPES = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class BenchSettings:
    """The validated `bench` node of one configuration; null speed options defer to the model/trainer config."""

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
    path: str | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BenchSettings:
        """Read cfg.bench, filling the null speed options from cfg.trainer and cfg.model, and validate."""
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
            path=None if node.path is None else str(node.path),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError (one line, exit status 2 in the CLI) for the first bad setting."""
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
        check(self.threads is None or _at_least(self.threads, 1), "bench.threads", self.threads, "null or an integer >= 1")
        for key, low in (("batch_size", 1), ("warmup", 0), ("steps", 2), ("rounds", 1)):
            check(_at_least(getattr(self, key), low), f"bench.{key}", getattr(self, key), f"an integer >= {low}")
        check(_at_least(self.seed, 0), "bench.seed", self.seed, "an integer >= 0")
        check(self.path is None or self.path != "", "bench.path", self.path, "null or a file path")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype torch.autocast runs in; None for float32 (autocast off)."""
        return AUTOCAST_DTYPES[self.precision]

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (as Lightning's 16-mixed does); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device) if self.precision == "16-mixed" else None


def _default(value: Any, fallback: Any) -> Any:
    """A null bench option means "as the training config says"."""
    return fallback if value is None else value


def _at_least(value: Any, low: int) -> bool:
    """An integer (not a YAML bool) of at least `low`."""
    return is_int(value) and value >= low
