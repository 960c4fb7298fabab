"""A bench run's configurations: overrides expanded, each composed from conf/bench.yaml, its bench.* checked."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Literal

import annotated_types as at
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from c3exp.config import check_keys, compose, config_keys, nearest_keys, parse_overrides
from c3exp.errors import OverrideError, check
from c3exp.paths import config_dir
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
    cuda_graphs: bool
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
                    "compile": cfg.task.get("compile", False), "cuda_graphs": cfg.task.get("cuda_graphs", False)}
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


PROCESS_KEYS = ("mode", "device", "threads", "keep_freed_memory", "peak", "warmup", "steps", "rounds", "seed", "path")


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: its label (the overrides that vary), its composed config and settings."""

    label: str
    overrides: list[str]
    cfg: DictConfig
    settings: BenchSettings


def expand_overrides(args: Sequence[str]) -> list[list[str]]:
    """One override list per configuration: the product of the values of every comma-separated override."""
    choices = []
    for arg, override in zip(args, parse_overrides(args)):
        key, sweep = override.get_key_element(), override.is_sweep_override()
        check(not sweep or override.is_choice_sweep(), key, override.value(), "a comma-separated list of values")
        choices.append([f"{key}={value}" for value in override.sweep_string_iterator()] if sweep else [arg])
    return [list(combination) for combination in itertools.product(*choices)]


def compose_bench(overrides: Sequence[str]) -> DictConfig:
    """The training config these overrides give, plus `bench`; a bad override (also bench.*) is one clear line."""
    parsed = parse_overrides(overrides)
    keys = [f"bench.{key}" for key in config_keys(OmegaConf.load(config_dir() / "bench.yaml").bench)]
    for override in parsed:
        key = override.key_or_group
        declared = override.is_add() or override.is_force_add() or override.is_delete()
        if key.split(".")[0] == "bench" and key not in keys and not declared:  # bench=foo would compose
            near = nearest_keys(key, keys)
            hint = f"did you mean {' or '.join(near)}?" if near else "`c3exp bench --help` lists them"
            raise OverrideError(f"{key} is not a config key or group ({override.input_line}): {hint}")
    try:
        return compose(overrides, config_name="bench")
    except OverrideError:  # compose names the nearest keys of config.yaml only: of the training part's keys here
        check_keys([override for override in parsed if override.key_or_group.split(".")[0] != "bench"])
        raise


def configurations(args: Sequence[str]) -> list[BenchConfig]:
    """Every configuration the command line describes; the PROCESS_KEYS settings must agree between them."""
    expanded = expand_overrides(args)
    varying = [i for i in range(len(args)) if len({overrides[i] for overrides in expanded}) > 1]
    configs = []
    for overrides in expanded:
        cfg = compose_bench(overrides)
        settings = BenchSettings.from_config(cfg)
        with open_dict(cfg):  # the bench speed options, written where training reads them
            cfg.task.channels_last, cfg.task.compile = settings.channels_last, settings.compile
            cfg.task.cuda_graphs = settings.cuda_graphs
        # the label: the overrides that differ between configurations, else the group choices (`model=resnet20`)
        chosen = [overrides[i] for i in varying] or [o for o in overrides if "." not in o.partition("=")[0]]
        configs.append(BenchConfig(" ".join(chosen) or "defaults", overrides, cfg, settings))
    for key in PROCESS_KEYS:
        values = {getattr(config.settings, key) for config in configs}
        check(len(values) == 1, f"bench.{key}", sorted(values, key=str), "one value for all configurations of a run")
    return configs
