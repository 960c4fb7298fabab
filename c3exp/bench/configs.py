"""The configurations of one bench run: comma-separated overrides expanded, each composed and checked.

conf/bench.yaml is the training config plus bench.*, so training configs never carry bench settings.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from c3exp.bench.settings import BenchSettings
from c3exp.config import check_keys, compose, config_keys, nearest_keys, parse_overrides
from c3exp.errors import ConfigError, OverrideError, check
from c3exp.paths import config_dir

#: conf/bench.yaml: the training config and the bench settings.
BENCH_CONFIG = "bench"
# Settings shared by every configuration of one run (the rest may differ between configurations).
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


def is_bench_override(override: Any) -> bool:
    """A parsed override of the bench settings (`bench.steps=...`, or `bench=...`, which is no setting)."""
    return override.key_or_group == "bench" or override.key_or_group.startswith("bench.")


def bench_keys() -> list[str]:
    """Every bench setting, dotted: bench.mode, bench.steps, ..."""
    defaults = OmegaConf.load(config_dir() / f"{BENCH_CONFIG}.yaml").bench
    return [f"bench.{key}" for key in config_keys(defaults)]


def check_bench_overrides(parsed: Sequence[Any]) -> None:
    """An unknown bench.* key: one line naming the nearest keys, as training does for its own."""
    keys = bench_keys()
    for override in parsed:
        if not is_bench_override(override) or override.is_add() or override.is_force_add() or override.is_delete():
            continue
        key = override.key_or_group
        if key not in keys:
            near = nearest_keys(key, keys)
            hint = f"did you mean {' or '.join(near)}?" if near else "`c3exp bench --help` lists them"
            raise OverrideError(f"{key} is not a config key or group ({override.input_line}): {hint}")


def compose_bench(overrides: Sequence[str]) -> DictConfig:
    """The training config these overrides give, plus `bench`; a bad override is one clear line."""
    check_bench_overrides(parse_overrides(overrides))
    try:
        return compose(overrides, config_name=BENCH_CONFIG)
    except OverrideError:
        # compose names the nearest keys for the training config only: name them for its keys here
        check_keys([o for o in parse_overrides(overrides) if not is_bench_override(o)])
        raise


def configure(overrides: list[str], label: str) -> BenchConfig:
    """Compose one configuration, with the bench speed options written into its model config."""
    cfg = compose_bench(overrides)
    settings = BenchSettings.from_config(cfg)
    with open_dict(cfg):
        cfg.model.channels_last, cfg.model.compile = settings.channels_last, settings.compile
    return BenchConfig(label, overrides, cfg, settings)


def configurations(args: Sequence[str]) -> list[BenchConfig]:
    """Every configuration the command line describes; the PROCESS_KEYS settings must agree between them."""
    expanded = expand_overrides(args)
    varying = [i for i in range(len(args)) if len({overrides[i] for overrides in expanded}) > 1]
    configs = [configure(overrides, config_label(overrides, varying)) for overrides in expanded]
    for key in PROCESS_KEYS:
        values = {getattr(c.settings, key) for c in configs}
        check(len(values) == 1, f"bench.{key}", sorted(values, key=str), "one value for all configurations of a run")
    return configs
