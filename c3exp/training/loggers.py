"""The W&B logger, set up so that sweeps aggregate, offline works, and resumed runs continue."""
from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from c3exp.errors import check

RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("auto", "online", "offline", "disabled")


def wandb_has_credentials() -> bool:
    """An API key in the environment or in ~/.netrc (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str) -> str:
    """`auto` is online with credentials and offline without: no account is needed to log locally."""
    check(mode in MODES, "logger.wandb.mode", mode, MODES)
    if mode != "auto":
        return mode
    return "online" if wandb_has_credentials() and os.environ.get("WANDB_MODE") != "offline" else "offline"


def sweep_group(config_key: str) -> str:
    """One W&B group per sweep and config (all seeds of one model x attn x data land together)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return f"{Path(hydra_cfg.sweep.dir).name}/{config_key}"
    except ValueError:  # not inside a Hydra run (notebooks, tests)
        pass
    return config_key


def persistent_run_id(save_dir: Path) -> str:
    """The run's W&B id, created once and kept in the run directory so a resumed run continues it."""
    path = save_dir / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    save_dir.mkdir(parents=True, exist_ok=True)
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    path.write_text(run_id + "\n")
    return run_id


def wandb_logger(
    project: str,
    save_dir: str,
    name: str,
    config_key: str,
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    job_type: str = "train",
    mode: str = "auto",
    log_model: bool | str = False,
    **kwargs: Any,
) -> WandbLogger:
    save_path = Path(save_dir)
    return WandbLogger(
        project=project,
        entity=entity,
        name=name,
        group=group or sweep_group(config_key),
        tags=list(tags or []),
        job_type=job_type,
        save_dir=str(save_path),
        id=persistent_run_id(save_path),
        resume="allow",
        mode=resolve_mode(mode),
        log_model=log_model,
        **kwargs,
    )
