"""The bench's own settings (`bench.*`), validated once, so a bad value is one line before anything is built."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, Literal

import annotated_types as at
import torch
from omegaconf import DictConfig

from c3exp.errors import check
from c3exp.schema import NonNegativeInt, PositiveInt, check_settings

AUTOCAST_DTYPES = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class BenchSettings:
    """The validated `bench` node of one configuration; null speed options defer to the task/trainer config."""

    mode: Literal["steps", "loop"]
    device: Literal["cpu", "cuda"]
    batch_size: PositiveInt
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"]
    channels_last: bool
    compile: bool
    threads: PositiveInt | None
    keep_freed_memory: bool
    peak: bool
    warmup: NonNegativeInt
    steps: Annotated[int, at.Ge(2)]
    rounds: PositiveInt
    seed: NonNegativeInt
    path: Annotated[str, at.MinLen(1)] | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> BenchSettings:
        """Read cfg.bench, filling the null speed options from cfg.trainer and cfg.task, and validate."""
        values = {field.name: cfg.bench.get(field.name) for field in fields(cls)}
        training = {"precision": cfg.trainer.precision, "channels_last": cfg.task.get("channels_last", False),
                    "compile": cfg.task.get("compile", False)}
        values |= {key: value for key, value in training.items() if values[key] is None}
        values["precision"] = str(values["precision"])
        check_settings(values, cls, "bench.")
        device, precision = values["device"], values["precision"]
        check(device != "cuda" or torch.cuda.is_available(), "bench.device", device, "cpu (no CUDA device is visible)")
        # Lightning trains 16-mixed as bf16-mixed on a CPU: timing fp16 there would time another run.
        check(device == "cuda" or precision != "16-mixed", "bench.precision", precision,
              "32 or bf16-mixed on a CPU (Lightning turns 16-mixed into bf16-mixed there)")
        return cls(**values)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype torch.autocast runs in; None for float32 (autocast off)."""
        return AUTOCAST_DTYPES[self.precision]

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling (as Lightning's 16-mixed does); bf16 and fp32 do not."""
        return torch.amp.GradScaler(self.device, enabled=self.precision == "16-mixed")
