"""The W&B logger, set up so that sweeps aggregate, offline works, and resumed runs continue."""
from __future__ import annotations

import http.client
import logging
import os
import secrets
import string
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from c3exp.errors import ConfigError, check
from c3exp.utils.atomic import write_text

log = logging.getLogger(__name__)
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
    # The mode is passed to wandb explicitly and would override WANDB_MODE, so an exported one wins here.
    env_mode = os.environ.get("WANDB_MODE", "")
    if env_mode in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env_mode == "dryrun" else env_mode  # dryrun: wandb's old name for offline
    return "online" if wandb_has_credentials() else "offline"


def server_problem(timeout: float) -> str | None:
    """Why the W&B server does not answer within `timeout` seconds, or None (wandb.init would wait 90 s, then fail)."""
    import wandb

    url = wandb.setup().settings.base_url  # the one wandb.init uses: WANDB_BASE_URL, `wandb login --host`, or W&B's
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an error status is still an answer: the server is there
    except (OSError, http.client.HTTPException) as err:  # refused, timed out, no DNS, not HTTP
        return f"the W&B server {url} does not answer ({getattr(err, 'reason', None) or err})"
    return None


def reachable_mode(mode: str, timeout: float) -> str:
    """The resolved mode; where the server does not answer, offline for `auto` (`wandb sync` uploads it later) and a
    one-line error for an explicit `online` (live dashboards, alerts) rather than hours of logging nowhere."""
    resolved = resolve_mode(mode)
    problem = server_problem(timeout) if resolved == "online" else None
    if problem is None:
        return resolved
    if mode == "auto":
        log.warning("%s: logging offline (logger.wandb.mode=offline); `wandb sync <run dir>/wandb` uploads it later", problem)
        return "offline"
    raise ConfigError("logger.wandb.mode", mode, f"offline here: {problem}; logger.wandb.mode=offline logs locally for `wandb sync`")


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


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def persistent_run_id(save_dir: Path, resume: str | None = "auto") -> str:
    """The run's W&B id, kept in the run directory so a resumed run continues it; the file is linked into place
    complete, so every rank of one run reads the same id."""
    path = save_dir / RUN_ID_FILE
    save_dir.mkdir(parents=True, exist_ok=True)
    if resume == "never":
        run_id = new_run_id()
        if rank_zero_only.rank == 0:  # only rank 0 talks to W&B; other ranks (DDP children start later) keep its id
            write_text(path, run_id + "\n")
        return run_id
    if not path.is_file():
        run_id = new_run_id() + "\n"
        try:
            with tempfile.NamedTemporaryFile("w", dir=save_dir, prefix=f".{RUN_ID_FILE}.") as tmp:
                tmp.write(run_id)
                tmp.flush()
                os.link(tmp.name, path)
        except FileExistsError:  # another process of this run created it first
            pass
        except OSError:  # a filesystem without hard links (some FUSE/SMB mounts): not race-free, but works
            if not path.exists():
                write_text(path, run_id)
    run_id = path.read_text().strip()
    if not run_id:  # an empty file, e.g. from a kill while an older version wrote it
        run_id = new_run_id()
        write_text(path, run_id + "\n")
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
    resume: str | None = "auto",
    server_timeout: float = 10.0,
    **kwargs: Any,
) -> WandbLogger:
    """`server_timeout`: how long an online run waits for the W&B server before going offline (see reachable_mode)."""
    save_path = Path(save_dir)
    return WandbLogger(
        project=project,
        entity=entity,
        name=name,
        group=group or sweep_group(config_key),
        tags=list(tags or []),
        job_type=job_type,
        save_dir=str(save_path),
        id=persistent_run_id(save_path, resume),
        resume="allow",
        mode=reachable_mode(mode, server_timeout),
        log_model=log_model,
        **kwargs,
    )
