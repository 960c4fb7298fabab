"""Composing, checking and describing configs, for the CLIs, notebooks and tests alike."""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from c3exp.errors import ConfigError, DataNotFoundError, OverrideError, check, imported
from c3exp.paths import config_dir
from c3exp.schema import NonNegativeFloat, PositiveFloat, PositiveInt, check_complete, check_settings, parameters
from c3exp.utils.mappings import flatten

#: Config groups a user picks on the command line, e.g. `attn=c3`.
GROUPS = ("task", "model", "attn", "data", "optim", "optim/optimizer", "trainer", "logger", "callbacks", "recipe", "experiment",
          "debug", "hparams_search")


def parallel_jobs() -> int:
    """Jobs the local parallel launcher runs at once: one per GPU, or 2 on a CPU-only machine."""
    import torch

    return torch.cuda.device_count() or 2


#: pid: keeps concurrent run directories apart; parallel_jobs: sizes joblib; direction: Optuna's word for a mode.
RESOLVERS = {"c3exp.pid": os.getpid, "c3exp.parallel_jobs": parallel_jobs,
             "c3exp.direction": {"max": "maximize", "min": "minimize"}.__getitem__}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=True)


@contextmanager
def on_c3exp_configs() -> Iterator[ConfigLoader]:
    """Hydra initialised on c3exp's conf/ for the block; the state it had (a run's, a notebook's) is put back after."""
    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            yield GlobalHydra.instance().config_loader()
    finally:
        if running is not None:
            GlobalHydra.instance().initialize(running)


def group_choices(group: str, searchpath: Sequence[str] = ()) -> list[str]:
    """The configs of `group`: c3exp's own and those `hydra.searchpath=[...]` overrides add."""
    with on_c3exp_configs() as loader:
        return loader.get_group_options(group, config_name="config", overrides=list(searchpath))


def searchpath(overrides: Iterable[str]) -> list[str]:
    """The `hydra.searchpath=[...]` overrides among `overrides`, as typed."""
    return [line for line in overrides if line.partition("=")[0].lstrip("+") == "hydra.searchpath"]


def one_line(err: HydraException) -> str:
    """Hydra's multi-line report, without its indented detail lines and links."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith((" ", "See "))]
    return " ".join(lines)


def parse_overrides(args: Iterable[str]) -> list:
    """Hydra's parse of `key=value` overrides, one clear line for one that does not parse."""
    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        try:
            parsed += parser.parse_overrides([arg])
        except HydraException as err:
            raise OverrideError(f"cannot parse the override {arg!r}: {one_line(err)}") from None
    return parsed


def override_values(override) -> list:
    """The values of an override: each of a sweep's, else its one value."""
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]


def check_overrides(overrides: Iterable[str]) -> list:
    """The parsed overrides; an unknown group choice (`data=foo`, also in a sweep or glob) is one line."""
    parsed = parse_overrides(overrides)
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS or override.is_delete():
            continue
        choices = group_choices(group, searchpath(o.input_line for o in parsed))
        value = override.value()
        if isinstance(value, Glob):
            check(bool(value.filter(choices)), group, (override.input_line or "").partition("=")[2], choices)
            continue
        for value in (v for value in override_values(override) for v in (value if isinstance(value, list) else [value])):
            check(value is None or str(value) in choices, group, value, choices)
    return parsed


_SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
_JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
_OPTUNA = ("optuna", "optuna")  # c3exp's own sweeper (c3exp.training.tuning) on Optuna
#: Choices served by a Hydra plugin of the `cluster` extras: group -> choice -> (plugin module, package).
PLUGIN_CHOICES = {
    "hydra/launcher": {"slurm": _SUBMITIT, "submitit_slurm": _SUBMITIT, "submitit_local": _SUBMITIT,
                       "parallel": _JOBLIB, "joblib": _JOBLIB},
    "hydra/sweeper": {"optuna": _OPTUNA},
    "hparams_search": {"optuna": _OPTUNA},
}


def check_plugins(parsed: Iterable) -> None:
    """A launcher or sweeper whose Hydra plugin is not installed: one line naming the pip install, not Hydra's dozen."""
    for override in parsed:
        plugins = PLUGIN_CHOICES.get(override.key_or_group)
        if not plugins or override.is_delete() or isinstance(override.value(), Glob):
            continue
        for value in override_values(override):
            module, package = plugins.get(str(value), (None, None))
            try:  # find_spec raises, not returns None, where the `hydra_plugins` namespace is missing
                installed = module is None or importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                installed = False
            if not installed:
                raise OverrideError(f"{override.key_or_group}={value} needs {package}, which is not installed: "
                                    f"pip install -e '.[cluster]' (or pip install {package})")


def _compose(overrides: Sequence[str], config_name: str = "config", return_hydra_config: bool = False) -> DictConfig:
    with on_c3exp_configs():
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def compose(overrides: Sequence[str] = (), config_name: str = "config", return_hydra_config: bool = False) -> DictConfig:
    """The config a CLI run with these overrides would use; `hydra:` interpolations exist only inside a run."""
    register_resolvers()
    parsed = check_overrides(overrides)
    try:
        return _compose(overrides, config_name, return_hydra_config)
    except HydraException as err:
        if config_name == "config":
            check_keys(parsed)  # an unknown key: name it and the nearest real ones
        raise OverrideError(one_line(err)) from None


def _group_selections(parsed: Iterable) -> list[list[str]]:
    """The group choices of a command line: one list per value of a swept group, the others at their first value."""
    choices: dict[str, list[str]] = {}
    for override in parsed:
        if override.key_or_group not in GROUPS or override.is_delete() or isinstance(override.value(), Glob):
            continue
        key = override.get_key_element()
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.input_line.partition("=")[2]]
        choices[key] = [f"{key}={value}" for value in values]
    first = [values[0] for values in choices.values()]
    variants = [first] + [[*first[:i], value, *first[i + 1:]] for i, values in enumerate(choices.values()) for value in values[1:]]
    return [[*variant, *searchpath(o.input_line for o in parsed)] for variant in variants]


def config_keys(node: DictConfig) -> list[str]:
    """Every dotted key of a config, inner nodes included, values set or not (`???`)."""
    leaves = flatten(OmegaConf.to_container(node, resolve=False, throw_on_missing=False))
    return list(dict.fromkeys(".".join(key.split(".")[:depth]) for key in leaves for depth in range(1, key.count(".") + 2)))


def check_keys(parsed: Sequence) -> None:
    """An unknown override key: one line naming the nearest ones (Hydra suggests `+key`, which nothing reads)."""
    plain = [o for o in parsed if not (o.is_add() or o.is_force_add() or o.is_delete())
             and o.key_or_group not in GROUPS and "/" not in o.key_or_group and not o.key_or_group.startswith("hydra")]
    if not plain:
        return
    try:  # a key counts if one of the sweep's group choices has it
        keys = list(dict.fromkeys(k for selection in _group_selections(parsed) for k in config_keys(_compose(selection))))
    except HydraException:
        return  # the group choices themselves fail: Hydra's message says why
    for override in plain:
        key = override.key_or_group
        if key not in keys:
            near = nearest_keys(key, keys)
            hint = f"did you mean {' or '.join(near)}?" if near else "`c3exp train --cfg job` prints the keys"
            raise OverrideError(f"{key} is not a config key or group ({override.input_line}): {hint}")


def nearest_keys(key: str, keys: Sequence[str]) -> list[str]:
    """Keys of the same section ending in the same name (optim.lr -> optim.optimizer.lr), else spelling neighbours."""
    name = key.rpartition(".")[2]
    same_name = [k for k in keys if k.rpartition(".")[2] == name and k.split(".")[0] == key.split(".")[0]]
    candidates = list(dict.fromkeys([*keys, *GROUPS]))
    return same_name[:3] or difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)


def hydra_flags_parser() -> argparse.ArgumentParser:
    """Hydra's command-line flags (-m, --cfg job, --info keep their meaning): its own parser is private."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",), ("--run", "-r"), ("--multirun", "-m"),
                  ("--shell-completion", "-sc")):
        parser.add_argument(*flags, action="store_true")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    parser.add_argument("--info", "-i", nargs="?", const="all")
    for flags in (("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"), ("--config-dir", "-cd"),
                  ("--experimental-rerun",)):
        parser.add_argument(*flags)
    return parser


def check_command_line(args: Sequence[str]) -> None:
    """Compose a run's command line up front, so a bad override is one line, not Hydra's report (sweeps: key by key)."""
    flags, stray = hydra_flags_parser().parse_known_args(list(args))
    if stray:
        raise OverrideError(f"unrecognized arguments {' '.join(stray)!r}: the key=value overrides go in one group, "
                            "with flags such as -m or --cfg before or after all of them")
    modes = [flag for flag, on in (("--run", flags.run), ("--multirun", flags.multirun), ("--cfg", flags.cfg),
                                   ("--info", flags.info), ("--shell-completion", flags.shell_completion)) if on]
    if len(modes) > 1:
        raise OverrideError(f"flags {' and '.join(modes)} together: Hydra runs one of --run, --multirun, --cfg, --info "
                            "and --shell-completion at a time (a sweep's job configs: drop -m and use --cfg job)")
    if flags.config_name or flags.config_path or flags.config_dir or flags.experimental_rerun or flags.shell_completion:
        return
    parsed = check_overrides(flags.overrides)
    check_plugins(parsed)
    if flags.help or flags.hydra_help or flags.info or flags.version:
        return
    sweeps = [override.input_line for override in parsed if override.is_sweep_override()]
    if flags.multirun or sweeps:
        check_keys(parsed)
    if flags.multirun:
        return
    single = [override.input_line for override in parsed if not override.is_sweep_override()]
    cfg = compose(single, return_hydra_config=True)  # a comma list sweeps only in a multirun: -m or hydra.mode
    if not sweeps:
        check_run_dir(cfg)
    elif getattr(cfg.hydra.mode, "name", cfg.hydra.mode) != "MULTIRUN":  # Hydra's hint to add -m ends a traceback
        raise OverrideError(f"{sweeps[0]} lists several values, a sweep: add -m to run one job per value "
                            f"(c3exp train -m {sweeps[0]} ...)")


#: The longest file name most filesystems allow (ext4, XFS, NFS), in bytes.
NAME_MAX = 255


def check_run_dir(cfg: DictConfig) -> None:
    """A run directory name the filesystem refuses fails in Hydra, before the run starts, with a traceback."""
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    part = next((part for part in str(run_dir or "").split("/") if len(part.encode()) > NAME_MAX), None)
    if part is None:
        return
    key, value = ("run_name", cfg.run_name) if str(cfg.get("run_name")) in part else ("hydra.run.dir", run_dir)
    raise ConfigError(key, value, f"a shorter name: the run directory's name {part[:40]}... has {len(part.encode())} bytes, "
                                  f"over the filesystem's limit of {NAME_MAX}")


#: A zero limit would fail (or report nothing) only after the whole training.
Batches = Annotated[float, at.Gt(0)]


@dataclass
class RunSettings:
    """The top-level keys c3exp reads."""

    seed: Annotated[int, at.Interval(ge=0, le=2**32 - 1), "numpy's seeds"]
    resume: Literal["auto", "never"] | None
    test_ckpt: Literal["last", "best"]
    keep_freed_memory: bool = False


@dataclass
class OptimSettings:
    """The optim group's own keys (the optimizer and scheduler nodes are torch's)."""

    warmup_epochs: Annotated[NonNegativeFloat, "epochs, fractions too; 0: none"] = 0
    ema_decay: Annotated[float, at.Gt(0), at.Lt(1), "e.g. 0.999"] | None = None


@dataclass
class OptimizerSettings:
    """The optimizer's keys c3exp's recipes set (its other keywords are the optimizer class's own)."""

    lr: PositiveFloat
    weight_decay: NonNegativeFloat = 0
    momentum: Annotated[float, at.Interval(ge=0, lt=1)] = 0


@dataclass
class TrainerSettings:
    """The Trainer keywords a run cannot do without (the others are Lightning's, checked by Lightning)."""

    max_epochs: PositiveInt
    limit_train_batches: Annotated[Batches | None, "batches or a fraction; 0 would train on no batch"] = None
    limit_val_batches: Annotated[Batches | None, "0 would skip validation, which checkpoints and the primary metric need"] = None
    limit_test_batches: Annotated[Batches | None, "0 would test on no batch, and the run ends by testing"] = None


#: node -> the dataclass describing the keys c3exp reads there, checked before torch is imported.
TOP_LEVEL_SETTINGS = {"": RunSettings, "optim.": OptimSettings, "optim.optimizer.": OptimizerSettings,
                      "trainer.": TrainerSettings}


def validate_config(cfg: DictConfig) -> None:
    """The settings c3exp reads outside constructors, before torch loads (constructors' own: where their nodes are built)."""
    # a `???` left in the config (data.root of imagefolder) is named before anything reads it
    key = min((key for key in OmegaConf.missing_keys(cfg) if not key.startswith("hydra")), default=None)
    check(key is None, str(key), "???", f"a value: {key} has no default, set it on the command line ({key}=...)")
    for prefix, settings in TOP_LEVEL_SETTINGS.items():
        node = OmegaConf.select(cfg, prefix.rstrip(".")) if prefix else cfg
        if node is not None:  # only the keys described: the others are the library's (Lightning's, torch's)
            check_settings({key: node[key] for key in parameters(settings) if key in node}, settings, prefix)
    run_name = str(cfg.get("run_name"))
    check(len(run_name.encode()) <= NAME_MAX, "run_name", run_name, f"at most {NAME_MAX} bytes: it names the run directory")
    check_task_fits_data(cfg)


#: task -> the base class of the data modules whose batches it reads (imported last: bad values answered without torch).
TASK_DATA = {"classification": "c3exp.data.base.ImageDataModule", "segmentation": "c3exp.data.voc.VOCSegmentationDataModule",
             "detection": "c3exp.data.detection.DetectionDataModule"}


def data_target(choice: str, searchpath: Sequence[str] = ()) -> str | None:
    """The `_target_` of data config `choice` (imagenet: imagefolder's, which it extends)."""
    return OmegaConf.select(_compose([f"data={choice}", *searchpath]), "data._target_")


def task_of(target: str | None) -> str | None:
    """The task whose batches a data module class yields."""
    cls = get_class(target) if target else None
    return next((task for task, base in TASK_DATA.items() if cls is not None and issubclass(cls, get_class(base))), None)


def check_task_fits_data(cfg: DictConfig) -> None:
    """Data whose targets the task cannot use (masks for classification) fails deep inside the loss, after the setup."""
    task, target = OmegaConf.select(cfg, "task.name"), OmegaConf.select(cfg, "data._target_")
    if task not in TASK_DATA or task_of(target) in (task, None):
        return
    dirs = searchpath(HydraConfig.get().overrides.hydra if HydraConfig.initialized() else [])  # the run's own
    fits = [choice for choice in group_choices("data", dirs) if task_of(data_target(choice, dirs)) == task]
    raise ConfigError("data", cfg.data.name, f"data for task={task}: one of {', '.join(fits)} "
                                             f"(data={cfg.data.name} is {task_of(target)} data)")


# The handful of settings that identify a run in results files, reports and dashboards: name -> config key.
KEY_CHOICES = {
    "task": "task.name", "model": "model.name", "attn": "attn.name", "placement": "attn.placement", "data": "data.name",
    "optim": "optim.name", "recipe": "recipe", "seed": "seed", "max_epochs": "trainer.max_epochs",
    "batch_size": "data.batch_size", "lr": "optim.optimizer.lr",
}


def key_choices(cfg: DictConfig) -> dict[str, object]:
    """The KEY_CHOICES values of a composed config (None where a config has no such key)."""
    return {name: OmegaConf.select(cfg, key) for name, key in KEY_CHOICES.items()}


def instantiate_checked(node: DictConfig, key: str | None = None, base: type | None = None, **kwargs):
    """hydra.utils.instantiate of the node resolved once, checked first where `key` names it; a user error surfaces as itself."""
    settings = OmegaConf.to_container(node, resolve=True)
    if key is not None:
        check_node(settings, key, supplied=kwargs, base=base)
    try:
        return instantiate(settings, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ConfigError, DataNotFoundError)):
            raise error.__cause__ from None
        raise


def check_node(node: DictConfig | dict, key: str, supplied: Iterable[str] = (), base: type | None = None) -> None:
    """A `_target_` node's settings against its target's signature, named `key.<setting>`; `supplied` keys are the code's."""
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = imported(settings.get("_target_"), f"{key}._target_")
    if base is not None:  # a plug-in of one's own (a task) derives from the class c3exp calls
        check(isinstance(target, type) and issubclass(target, base), f"{key}._target_", settings["_target_"],
              f"a subclass of {base.__module__}.{base.__qualname__}")
    supplied = list(supplied)
    plain = {name: value for name, value in settings.items() if not name.startswith("_") and name not in supplied}
    check_settings(plain, target, f"{key}.", supplied=supplied)
    check_complete(plain, target, f"{key}.", supplied=supplied)
