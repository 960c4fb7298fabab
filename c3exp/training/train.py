"""Train, then test, and write results.json in the run directory (`c3exp train` calls `train`)."""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict

from c3exp.checkpoints import load_checkpoint, open_checkpoint, trusted
from c3exp.config import instantiate_checked, key_choices, validate_config
from c3exp.data.base import per_process_batch_size
from c3exp.errors import ConfigError, TrainerSettingError, check
from c3exp.models import without_pretrained
from c3exp.results import RESULTS_FILE, summarise_history, write_json
from c3exp.saved_config import changed_settings, stored_config
from c3exp.tasks import TaskModule, build_network, build_task
from c3exp.training.callbacks import recipe_callbacks
from c3exp.training.loggers import carry_over_csv_rows
from c3exp.training.sweep import assign_gpu_for_parallel_job, pin_ddp_children_to_this_job
from c3exp.utils.atomic import remove_temps, write_with
from c3exp.utils.complexity import model_complexity
from c3exp.utils.memory import keep_freed_memory
from c3exp.utils.noise import silence_library_noise

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None, key: str | None = None) -> list[Any]:
    """Every entry of a dict-of-`_target_` group, null entries off; with `key` each entry's settings are checked."""
    entries = (group or {}).items()
    return [instantiate_checked(node, key and f"{key}.{name}") for name, node in entries if node and "_target_" in node]


def use_the_cpus_slurm_gave() -> int | None:
    """As many threads as SLURM's --cpus-per-task (torch takes the node's cores); the count set, or None."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not cpus.isdigit() or int(cpus) < 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    torch.set_num_threads(int(cpus))
    return int(cpus)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    datamodule: L.LightningDataModule = instantiate_checked(cfg.data, "data")
    if cfg.data.get("num_classes") is None:  # imagefolder: count the class folders
        datamodule.setup()
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    return datamodule


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save beside the checkpoint, synced and renamed (a move from $TMPDIR may truncate it); URLs: Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's message for storage_options
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        remove_temps(Path(path).parent, "*.ckpt")
        write_with(path, lambda file: torch.save(checkpoint, file))


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """trainer.plugins (none, one or a list; configs instantiated) plus AtomicCheckpointIO unless they have one."""
    plugins = instantiate(plugins) if OmegaConf.is_config(plugins) else plugins
    listed = isinstance(plugins, Iterable) and not isinstance(plugins, str)
    given = list(plugins) if listed else [] if plugins is None else [plugins]
    return given if any(isinstance(plugin, CheckpointIO) for plugin in given) else [*given, AtomicCheckpointIO()]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of cfg.trainer plus the optim recipe's callbacks; settings Lightning rejects are one line."""
    loggers = instantiate_group(cfg.get("logger")) or False
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks") + recipe_callbacks(cfg.get("optim"))
    try:
        plugins = with_atomic_checkpoint_io(cfg.trainer.get("plugins"))
        return instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, plugins=plugins)
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, (MisconfigurationException, ValueError)):
            raise
        settings = ", ".join(f"trainer.{key}={cfg.trainer.get(key)}" for key in ("accelerator", "devices", "precision"))
        hint = "; without a GPU use trainer=cpu" if "gpu" in str(cause).lower() and not torch.cuda.is_available() else ""
        raise TrainerSettingError(f"Lightning rejects the trainer settings ({settings}): {' '.join(str(cause).split())}{hint}") from None


def newest_good_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """last.ckpt and its contents, or if a kill cut it short, the newest other checkpoint that opens (zip, pickle)."""
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p.stat().st_mtime), reverse=True)
    for path in candidates:
        try:
            return path, open_checkpoint(path, key="resume")
        except ConfigError:  # a checkpoint refused as unsafe is said, not skipped
            raise
        except Exception:  # a file cut short by a kill during saving
            log.warning("skipping unreadable checkpoint %s", path)
    return None


def resume_checkpoint(cfg: DictConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to resume and its contents: ckpt_path wins; `resume=auto` takes the run's newest good one."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path), load_checkpoint(cfg.ckpt_path)  # a file that is no checkpoint is one line
    if cfg.get("resume") != "auto":
        return None, None
    found = newest_good_checkpoint(Path(cfg.output_dir) / "checkpoints")
    log.info("resume=auto: %s", f"continuing from {found[0]}" if found else "no checkpoint yet, starting fresh")
    return (str(found[0]), found[1]) if found else (None, None)


def check_resumable(cfg: DictConfig, module: TaskModule, checkpoint: dict[str, Any], path: str) -> None:
    """Only speed, logging and epochs may change (else results.json mislabels old weights); a new network: one line."""
    key = "ckpt_path" if cfg.get("ckpt_path") else "resume"
    afresh = "start afresh with resume=never or another hydra.run.dir"
    changed = changed_settings(stored_config(checkpoint, path), OmegaConf.to_container(cfg, resolve=True))
    check(not changed, key, path, f"a checkpoint trained with this command's settings, but these differ: "
                                  f"{', '.join(changed)}; resume with the run's own settings, or {afresh}")
    theirs = {name: tuple(tensor.shape) for name, tensor in checkpoint.get("state_dict", {}).items()}
    ours = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    check(theirs == ours, key, path, f"a checkpoint of this run's network; {afresh}")


def _checkpoint_paths(trainer: L.Trainer) -> dict[str, str | None]:
    """The best (monitored) and the latest checkpoint written by the run's ModelCheckpoint callbacks."""
    paths: dict[str, str | None] = {"best": None, "last": None}
    for callback in trainer.checkpoint_callbacks:
        found = callback.best_model_path if callback.monitor else callback.last_model_path or callback.best_model_path
        paths["best" if callback.monitor else "last"] = found or None
    return paths


def train(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate data, model, loggers and trainer from `cfg`, fit, test, and return the results."""
    validate_config(cfg)
    started = time.time()
    silence_library_noise()
    if cfg.get("keep_freed_memory", False):
        keep_freed_memory()
    use_the_cpus_slurm_gave()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    ckpt_path, checkpoint = resume_checkpoint(cfg)
    net = build_network(without_pretrained(cfg) if ckpt_path else cfg)  # a checkpoint's weights replace pretrained ones
    complexity = model_complexity(net, cfg.data)
    module = build_task(cfg, net)
    module.process_started = started
    assign_gpu_for_parallel_job(cfg)
    trainer = build_trainer(cfg)
    per_process_batch_size(cfg.data.batch_size, trainer.world_size)  # here, not once in every DDP process it starts
    log.info("%s: %s params, %s MACs per image", cfg.run_name, f"{complexity['params']:,}", f"{complexity['macs']:,}")
    if checkpoint is not None:
        check_resumable(cfg, module, checkpoint, ckpt_path)
    try:
        start_loggers(cfg, trainer, complexity, ckpt_path, checkpoint)
        results = fit_and_test(cfg, trainer, module, datamodule, ckpt_path)
        results.update(complexity, wall_seconds=module.wall_seconds_before + time.time() - started)
        log_final_results(trainer, results)
    except BaseException:
        with suppress(Exception):  # W&B's service may be gone too (SIGTERM): keep the error that stopped the run
            finish_wandb_run(exit_code=1)
        raise
    finish_wandb_run(exit_code=0)
    if trainer.is_global_zero:
        path = write_json(Path(cfg.output_dir) / RESULTS_FILE, results)
        tested = " ".join(f"{key}={value:.4f}" for key, value in results.items() if key.startswith("test_") and isinstance(value, float))
        log.info("%s -> %s", tested, path)
    return results


def start_loggers(
    cfg: DictConfig, trainer: L.Trainer, complexity: dict[str, int], ckpt_path: str | None, checkpoint: dict[str, Any] | None
) -> None:
    """Log the config, and the model's size once: a resumed run's CSV keeps its earlier rows instead."""
    for logger in trainer.loggers:
        if checkpoint is not None and isinstance(logger, CSVLogger) and trainer.is_global_zero:
            history = checkpoint["c3exp"].get("history", [])  # walked and checked once, by check_resumable
            carry_over_csv_rows(logger, ckpt_path, int(checkpoint.get("global_step", 0)), history)  # before the writer starts
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if checkpoint is None:
            logger.log_metrics({f"model/{key}": value for key, value in complexity.items()}, step=0)


def fit_and_test(
    cfg: DictConfig, trainer: L.Trainer, module: TaskModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> dict[str, Any]:
    pin_ddp_children_to_this_job()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trusted())
    history = list(module.history)
    test_ckpt = "best" if cfg.test_ckpt == "best" and trainer.checkpoint_callback else None
    test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False, weights_only=not trusted())[0]
    primary = module.primary_metric
    return {
        **key_choices(cfg),
        "task_name": cfg.get("task_name"),  # "debug" for the debug configs, which reports leave out
        "primary_metric": {"name": primary.name, "mode": primary.mode},
        **summarise_history(history, primary, module.metric_modes),
        **{f"test_{key.partition('/')[2]}": value for key, value in test_metrics.items() if key.startswith("test/")},
        "test_ckpt": cfg.test_ckpt,
        "train_seconds": module.train_seconds,
        "run_dir": str(cfg.output_dir),
        "checkpoints": _checkpoint_paths(trainer),
        "history": history,
    }


def log_final_results(trainer: L.Trainer, results: dict[str, Any]) -> None:
    numbers = {f"final/{key}": value for key, value in results.items() if isinstance(value, (int, float))}
    for logger in trainer.loggers:
        logger.log_metrics(numbers, step=trainer.global_step)
        logger.finalize("success")


def finish_wandb_run(exit_code: int) -> None:
    """End this run's W&B run, or the next job of a multirun in this process would log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)
