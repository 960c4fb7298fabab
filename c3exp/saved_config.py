"""A checkpoint's config is data, never code (`_target_: os.system`): rebuilt from c3exp's own groups, within a node budget."""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from c3exp.config import GROUPS, compose, group_choices
from c3exp.errors import ConfigError
from c3exp.utils.mappings import config_value, flatten

#: Most nodes (dict entries and list items, shared references counted each time they are reached).
MAX_NODES = 200_000
MAX_DEPTH = 32
#: Keys by which Hydra's instantiate turns a node into a call: only ever taken from c3exp's own configs.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})
#: Where this machine keeps things: never taken from someone else's checkpoint (data modules write into data.root).
LOCAL_KEYS = ("data.root", "output_dir", "trainer.default_root_dir")
SCALARS = (str, int, float, bool, type(None))
#: Never built when re-testing: c3exp's defaults stand in (a run's own would need their config group known).
UNUSED_SECTIONS = ("logger", "callbacks")
#: Settings that moved, old key -> new: the speed options to the task, the network's settings to the task's `net` node.
MOVED_KEYS = {"model.channels_last": "task.channels_last", "model.compile": "task.compile", "task.network": "task.net",
              "task.head": "task.net.head", "task.head_options": "task.net.head_options", "task.aux_loss": "task.net.aux_loss"}


class UnsafeCheckpointError(ConfigError):
    """A checkpoint whose stored config is not plain data that c3exp's configs can rebuild."""

    def __init__(self, path: str | Path, reason: str, key: str = "ckpt_path"):
        super().__init__(key, str(path), f"a checkpoint whose stored config is plain data of c3exp's own configs: {reason}")


def check_plain(tree: Any, path: str | Path, where: str, depth: int = 0, count: Iterator[int] | None = None) -> None:
    """`tree` holds only dicts with string keys, lists and scalars, within MAX_NODES (refused before expanding) and MAX_DEPTH."""
    count = count or itertools.count(1)
    if next(count) > MAX_NODES:
        raise UnsafeCheckpointError(path, f"it expands past {MAX_NODES:,} values (at {where})")
    if depth > MAX_DEPTH:
        raise UnsafeCheckpointError(path, f"it nests deeper than {MAX_DEPTH} levels (at {where})")
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                raise UnsafeCheckpointError(path, f"a key of {where} is a {type(key).__name__}, not a string")
            check_plain(value, path, f"{where}.{key}", depth + 1, count)
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            check_plain(item, path, f"{where}[{index}]", depth + 1, count)
    elif not isinstance(tree, SCALARS):
        raise UnsafeCheckpointError(path, f"{where} is a {type(tree).__name__}")
    elif isinstance(tree, str) and "${" in tree:
        raise UnsafeCheckpointError(path, f"{where}={tree!r} is an interpolation, which a resolved config never holds")


def checked_section(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's `c3exp` section, checked to be bounded plain data."""
    section = checkpoint.get("c3exp")
    if not isinstance(section, dict):
        raise UnsafeCheckpointError(path, "its c3exp section is missing or not a dict")
    check_plain(section, path, "c3exp")
    history = section.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise UnsafeCheckpointError(path, "its history is not a list of per-epoch rows")
    if not isinstance(section.get("config", {}), dict):
        raise UnsafeCheckpointError(path, "its config is not a mapping")
    return section


def stored_config(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    return dict(checked_section(checkpoint, path).get("config") or {})


def stored_choices(section: Mapping[str, Any], config: Mapping[str, Any], path: str | Path) -> dict[str, str]:
    """The run's config-group choices: stored by the run, or (older checkpoints) each group's file named as its `name`."""
    named = {group: config_value(config, f"{group}.name") for group in ("task", "model", "attn", "data", "optim")}
    choices = {group: value for group, value in named.items() if isinstance(value, str) and value in group_choices(group)}
    saved = section.get("choices")
    for group, value in (saved if isinstance(saved, dict) else {}).items():
        if group not in GROUPS or value is None:
            continue
        if str(value) not in group_choices(group):
            raise UnsafeCheckpointError(path, f"its {group}={value!r} is none of c3exp's {group} configs ({', '.join(group_choices(group))})")
        choices[group] = value
    if "optim" in choices and "optim/optimizer" not in choices:
        choices.update(_nested_choice("optim/optimizer", config, choices))
    return {group: str(value) for group, value in choices.items()}


def _nested_choice(group: str, config: Mapping[str, Any], choices: Mapping[str, str]) -> dict[str, str]:
    """An older checkpoint's choice in a nested group (optim/optimizer): the one building the stored `_target_`."""
    target = config_value(config, f"{group.replace('/', '.')}._target_")
    base = [f"{key}={value}" for key, value in choices.items()]
    for choice in group_choices(group):
        node = OmegaConf.select(compose([*base, f"{group}={choice}"]), f"{group.replace('/', '.')}._target_")
        if node == target:
            return {group: choice}
    return {}


def merge_plain(ours: Any, theirs: Any, path: str | Path, where: str = "", vouched: Mapping[str, str] | None = None) -> Any:
    """`theirs` values in `ours`' shape; Hydra's call keys must be ours or `vouched` for by the command line."""
    if isinstance(ours, dict) and not isinstance(theirs, (dict, type(None))):
        raise UnsafeCheckpointError(path, f"{where} is {type(theirs).__name__} where c3exp's configs have a section")
    if isinstance(theirs, list):  # its items are data: a call in one is refused as in a section c3exp's configs lack
        return [merge_plain(None, item, path, f"{where}[{index}]", vouched) for index, item in enumerate(theirs)]
    if not isinstance(theirs, dict):
        return theirs  # a plain value, or a section switched off (logger.wandb: null)
    merged = dict(ours) if isinstance(ours, dict) else {}
    for key, value in theirs.items():
        dotted = f"{where}.{key}" if where else key
        if key in HYDRA_KEYS:
            if value != merged.get(key) and (vouched or {}).get(dotted) != str(value):
                raise UnsafeCheckpointError(path, f"its {dotted}={value!r} is not what c3exp's configs build there "
                                                  f"({merged.get(key)!r}); a target you trust is taken from the command line: {dotted}=...")
            merged[key] = value
        elif dotted not in LOCAL_KEYS:  # a key ours lacks (an option of a free-form section, a `+key`) is plain data
            merged[key] = merge_plain(merged.get(key), value, path, dotted, vouched)
    return merged


def rebuild_config(checkpoint: Mapping[str, Any], path: str | Path, vouched: Mapping[str, str] | None = None) -> DictConfig:
    """The checkpoint's run config, composed again from c3exp's own groups with its plain values in place."""
    section = checked_section(checkpoint, path)
    config = {key: value for key, value in (section.get("config") or {}).items() if key not in UNUSED_SECTIONS}
    moved_keys(config)
    choices = stored_choices(section, config, path)
    composed = compose([f"{group}={value}" for group, value in choices.items()])
    ours = OmegaConf.to_container(composed, resolve=False)
    merged = merge_plain(ours, config, path, vouched=vouched)
    merged["output_dir"] = str(Path(path).resolve().parent.parent)
    return OmegaConf.create(merged)


def moved_keys(config: dict[str, Any]) -> None:
    """An older run's settings under their keys of today (in place)."""
    for old, new in MOVED_KEYS.items():
        *old_path, old_key = old.split(".")
        parent, (*new_path, new_key), node = config_value(config, ".".join(old_path)), new.split("."), config
        if isinstance(parent, dict) and old_key in parent:
            value = parent.pop(old_key)
            for part in new_path:
                node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.setdefault(new_key, value)


def hydra_choices() -> dict[str, str]:
    """The group choices of the Hydra run in progress (empty outside one)."""
    if not HydraConfig.initialized():
        return {}
    return {group: str(value) for group, value in HydraConfig.get().runtime.choices.items() if group in GROUPS and value is not None}


#: Settings a resumed run may change: where, how fast, what it logs, and more epochs (a schedule fitted to the
#: length differs in its resolved settings or is checked at fit start); every other one changes the result.
RESUME_FREE = (
    "task_name", "ckpt_path", "resume", "output_dir", "run_name", "keep_freed_memory", "test_ckpt", "logger", "callbacks",
    "data.root", "data.num_workers", "data.download", "data.verify_checksums", "task.channels_last", "task.compile",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.default_root_dir",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps", "trainer.limit_test_batches",
    "trainer.max_epochs",
)


def changed_settings(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Each result-changing setting that differs from the checkpoint's run; keys added to c3exp since are skipped."""
    before, after = flatten(dict(stored)), flatten(dict(current))
    return [f"{key}={after[key]!r} (the checkpoint's run: {before[key]!r})"
            for key in sorted(before.keys() & after.keys())
            if before[key] != after[key] and not any(key == free or key.startswith(f"{free}.") for free in RESUME_FREE)]
