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

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from c3exp.errors import ConfigError, check
from c3exp.training.sweep import in_multirun
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
    """`auto`: an exported WANDB_MODE (the mode passed would override it), online with credentials, else offline."""
    check(mode in MODES, "logger.wandb.mode", mode, MODES)
    if mode != "auto":
        return mode
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
    """The resolved mode; with no server answering, `auto` logs offline (for `wandb sync`), `online` is one line."""
    resolved = resolve_mode(mode)
    problem = server_problem(timeout) if resolved == "online" else None
    if problem is None:
        return resolved
    if mode == "auto":
        log.warning("%s: logging offline (logger.wandb.mode=offline); `wandb sync <run dir>/wandb` uploads it later",
                    problem)
        return "offline"
    raise ConfigError("logger.wandb.mode", mode,
                      f"offline here: {problem}; logger.wandb.mode=offline logs locally for `wandb sync`")


def new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def persistent_run_id(save_dir: Path, resume: str | None = "auto") -> str:
    """The W&B id kept in the run folder for resumes, linked into place complete: every rank reads the same id."""
    path = save_dir / RUN_ID_FILE
    save_dir.mkdir(parents=True, exist_ok=True)
    if resume == "never" and rank_zero_only.rank == 0:  # other ranks (DDP children start later) read rank 0's new id
        write_text(path, new_run_id() + "\n")
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


def wandb_logger(project: str, save_dir: str, name: str, config_key: str, entity: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, job_type: str = "train", mode: str = "auto",
                 log_model: bool | str = False, resume: str | None = "auto", server_timeout: float = 10.0,
                 **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger, one group per sweep and config (all seeds together); see reachable_mode for timeouts."""
    sweep = f"{Path(HydraConfig.get().sweep.dir).name}/" if in_multirun() else ""
    return WandbLogger(project=project, entity=entity, name=name, group=group or sweep + config_key,
                       tags=list(tags or []), job_type=job_type, save_dir=str(Path(save_dir)),
                       id=persistent_run_id(Path(save_dir), resume), resume="allow",
                       mode=reachable_mode(mode, server_timeout), log_model=log_model, **kwargs)
