"""Test a checkpoint again, on its run's test data or other data, here or on another machine.

Prints the test metrics and writes them beside the checkpoint (<checkpoint>.eval.json). The run's config is
composed again from c3exp's own config groups with the checkpoint's choices and plain values (a checkpoint is
data: c3exp.saved_config). Every other key=value changes a setting of it: data.root=/datasets (this machine's,
C3EXP_DATA or data/, never the checkpoint's), data.batch_size=512, trainer.accelerator=cpu|gpu|auto,
trainer.precision=32-true, task.tta_flip=true; data=NAME (as many classes) and trainer=NAME put another config
file of that group in place of the run's. The network (task.*, model.*, attn.*, data.num_classes) is the
checkpoint's. A GPU run's checkpoint is tested on the CPU where there is no GPU, unless the command line asks for one.

example: c3exp eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt data.root=/datasets
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from c3exp.cli.options import command, help_text, option, parse
from c3exp.config import GROUPS, compose
from c3exp.errors import ConfigError, check
from c3exp.results import write_json
from c3exp.saved_config import HYDRA_KEYS, rebuild_config
from c3exp.utils.mappings import flatten

if TYPE_CHECKING:
    import torch

SWAPPABLE_GROUPS = ("data", "trainer")  # where the test data is and what runs it: another config file may stand in
MODEL_GROUPS = ("task", "model", "attn")  # they decide the network: the checkpoint's weights fit only the run's own
# Task settings a checkpoint may be tested with anew: `c3exp eval ckpt_path=... task.tta_flip=true`
EVAL_FREE_TASK_KEYS = ("primary_metric", "label_smoothing", "tta_flip", "channels_last", "compile")


@dataclass
class Options:
    ckpt_path: str = option("the checkpoint, e.g. <run dir>/checkpoints/last.ckpt", metavar="PATH")


def swap_group(cfg: DictConfig, group: str, choice: str) -> None:
    """`data=NAME` / `trainer=NAME`: that group's config file in place of the run's, as in training."""
    check(group not in MODEL_GROUPS, group, choice,
          f"the checkpoint's own {group} ({OmegaConf.select(cfg, f'{group}.name')}): "
          "model settings cannot be changed when evaluating a checkpoint")
    check(group in SWAPPABLE_GROUPS, group, choice,
          "data=NAME or trainer=NAME: evaluation takes its other settings from the checkpoint")
    node = compose([f"{group}={choice}"])[group]  # an unknown choice: one line naming the group's choices
    if group == "data":
        classes, saved = node.get("num_classes"), cfg.data.num_classes
        check(classes in (None, saved), group, choice,
              f"a dataset with the checkpoint's {saved} classes ({choice} has {classes}): the network's head is fixed")
    cfg[group] = node


def set_key(cfg: DictConfig, key: str, value: str) -> None:
    try:
        OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"x={value}"]).x, merge=True)
    except (ConfigKeyError, ConfigAttributeError):  # an unknown key, top-level or nested
        raise ConfigError(key, value, "a key of the checkpoint's config (see its .hydra/config.yaml)") from None


def load_run(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint and its run's config rebuilt from c3exp's groups (a checkpoint is data), with `overrides`."""
    from c3exp.checkpoints import load_checkpoint
    from c3exp.training.train import build_datamodule

    checkpoint = load_checkpoint(path)
    for item in overrides:
        check("=" in item, "argument", item, "a key=value config override")
    pairs = [item.split("=", 1) for item in overrides]
    saved = rebuild_config(checkpoint, path, vouched={key: value for key, value in pairs
                                                      if key.rpartition(".")[2] in HYDRA_KEYS})
    cfg = saved.copy()
    OmegaConf.set_struct(cfg, True)
    for key, value in sorted(pairs, key=lambda pair: pair[0] not in GROUPS):  # group choices first, as Hydra does
        (swap_group if key in GROUPS else set_key)(cfg, key, value)
    if cfg.data.get("num_classes") is None:  # imagefolder: the classes it counts must be the checkpoint's
        build_datamodule(cfg)
    check_same_network(saved, cfg)
    note_data_root(checkpoint, cfg, overrides)
    return checkpoint, cfg


def note_data_root(checkpoint: dict[str, Any], cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Say where the test data is read from when it is not where the run read it (never the checkpoint's data.root)."""
    stored = checkpoint["c3exp"].get("config", {}).get("data", {}).get("root")
    here = OmegaConf.select(cfg, "data.root", default=None)
    chosen = any(item.startswith(("data.root=", "data=")) for item in overrides)
    if stored is not None and str(stored) != str(here) and not chosen:
        print(f"note: the test data is read from data.root={here}, this machine's, not the run's {stored} "
              "(a checkpoint never says where c3exp reads or writes); data.root=... chooses", flush=True)


def network_settings(cfg: DictConfig) -> dict[str, Any]:
    """What decides the weights: task (less what only training, scoring or speed reads), model, attn, num_classes."""
    settings = {"data.num_classes": cfg.data.get("num_classes")}
    for group in MODEL_GROUPS:
        if cfg.get(group):
            settings.update(flatten(OmegaConf.to_container(cfg[group], resolve=True), f"{group}."))
    return {key: value for key, value in settings.items() if key.removeprefix("task.") not in EVAL_FREE_TASK_KEYS}


def check_same_network(saved: DictConfig, cfg: DictConfig) -> None:
    """The checkpoint's weights fit only the network it was trained as: name the first setting that differs."""
    before, after = network_settings(saved), network_settings(cfg)
    for key in sorted(before.keys() | after.keys()):
        check(after.get(key) == before.get(key), key, after.get(key),
              f"the checkpoint's {before.get(key)!r}: model settings cannot be changed when evaluating a checkpoint")


def load_trained(path: str | Path, overrides: Sequence[str], build: Callable[[DictConfig], torch.nn.Module],
                 prefix: str = "") -> tuple[torch.nn.Module, DictConfig]:
    """`build(cfg)` of the run's config with the stored weights under `prefix`; a mismatch is the checkpoint's fault."""
    from c3exp.models import without_pretrained

    checkpoint, cfg = load_run(path, overrides)
    module = build(without_pretrained(cfg))  # the checkpoint's weights replace pretrained ones: no download
    try:
        module.load_state_dict({key.removeprefix(prefix): value for key, value in checkpoint["state_dict"].items()
                                if key.startswith(prefix)})
    except RuntimeError as err:  # missing, unexpected or reshaped tensors
        detail = " ".join(str(err).split())[:200]
        raise ConfigError("ckpt_path", str(path),
                          f"a checkpoint whose weights fit the model of its config ({detail})") from None
    warn_if_not_finite(checkpoint["state_dict"], path)
    return module, cfg


def warn_if_not_finite(state_dict: dict[str, Any], path: str | Path) -> None:
    """A checkpoint of a run that diverged tests to chance-level metrics or NaN: say so beside them."""
    import torch

    bad = [name for name, value in state_dict.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        print(f"warning: {path} holds NaN or infinite weights in {len(bad)} tensors (e.g. {bad[0]}): "
              "its run diverged, and these metrics mean nothing", file=sys.stderr, flush=True)


def accelerator_available(name: str) -> bool:
    """Whether Lightning finds a device of this kind here (`gpu`: CUDA or Apple MPS)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    kinds = ("cuda", "mps") if name == "gpu" else (name,)
    return name == "auto" or any(AcceleratorRegistry[kind]["accelerator"].is_available() for kind in kinds)


def choose_accelerator(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """The config's accelerator; the run's own GPU falls back to the CPU where there is none, a GPU asked for fails."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    known = tuple(dict.fromkeys(("auto", "cpu", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))))
    wanted = str(cfg.trainer.get("accelerator") or "auto")
    asked = [item for item in overrides if item.partition("=")[0] in ("trainer", "trainer.accelerator")]
    key, _, value = asked[-1].partition("=") if asked else ("trainer.accelerator", "", wanted)
    check(wanted in known, key, value, known)
    if accelerator_available(wanted):
        return wanted
    check(not asked, key, value,
          f"cpu or auto: there is no {wanted} device on this machine (trainer.accelerator={wanted})")
    print(f"note: the run trained with trainer.accelerator={wanted}; there is none here, so it is tested on the CPU",
          file=sys.stderr, flush=True)
    return "cpu"


def evaluate(ckpt_path: str | Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Rebuild the run's model and data from the checkpoint and test the stored weights."""
    import lightning as L

    from c3exp.tasks import build_task
    from c3exp.training.train import build_datamodule
    from c3exp.utils.noise import silence_library_noise

    silence_library_noise()
    module, cfg = load_trained(ckpt_path, overrides, build_task)
    accelerator = choose_accelerator(cfg, overrides)
    datamodule = build_datamodule(cfg)
    # Not build_trainer: re-testing one checkpoint uses none of the run's DDP, loggers or checkpoints.
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=cfg.trainer.get("precision", "32-true"),
                        limit_test_batches=cfg.trainer.get("limit_test_batches"),  # the run's own test set
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    return {key: float(value) for key, value in metrics.items()}


def run(args: list[str]) -> dict[str, float]:
    """Test the checkpoint, print the metrics and write them beside it."""
    options, overrides = parse(Options, args, overrides=True)
    metrics = evaluate(options.ckpt_path, overrides)
    out = Path(options.ckpt_path).with_suffix(".eval.json")
    write_json(out, {"ckpt_path": options.ckpt_path, **metrics})
    print(" ".join(f"{key}={value:.4f}" for key, value in metrics.items()), "->", out)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, float] | None:
    return command(argv, lambda: help_text("eval", __doc__, Options), run)
