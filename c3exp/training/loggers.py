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
    """Why the W&B server does not answer within `timeout` seconds, or None if it answers.

    wandb.init itself waits init_timeout (90 s) on a node without network and then raises a long traceback.
    """
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
    """The resolved mode, offline for `auto` where the server does not answer, an error for an explicit `online`.

    Why the difference: `auto` means "log online if you can", and an offline run loses nothing (`wandb sync`
    uploads it later), so it falls back in one line; `online` is an explicit request (live dashboards, alerts),
    so it stops before any work rather than train for hours logging where nobody looks.
    """
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


def replace_run_id(save_dir: Path, path: Path) -> str:
    """A new id written to `path` all at once (readers never see a half-written file)."""
    run_id = new_run_id()
    os.replace(write_temp(save_dir, run_id + "\n"), path)
    return run_id


def write_temp(save_dir: Path, text: str) -> Path:
    """A uniquely named file next to the target (mkstemp is exclusive even on shared filesystems)."""
    fd, tmp = tempfile.mkstemp(dir=save_dir, prefix=f".{RUN_ID_FILE}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(tmp)


def persistent_run_id(save_dir: Path, resume: str | None = "auto") -> str:
    """The run's W&B id, kept in the run directory so a resumed run continues it; `resume=never` starts a new one.

    Every process of one run (one per rank) must get the same id, so the file is created by linking a
    complete temporary file into place: exactly one process wins and the others read its id.
    """
    path = save_dir / RUN_ID_FILE
    save_dir.mkdir(parents=True, exist_ok=True)
    if resume == "never":
        # Only rank 0 talks to W&B; other ranks (DDP children start later) must not replace its id.
        return replace_run_id(save_dir, path) if getattr(rank_zero_only, "rank", 0) == 0 else new_run_id()
    if not path.is_file():
        tmp = write_temp(save_dir, new_run_id() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process of this run created it first
            pass
        except OSError:  # a filesystem without hard links (some FUSE/SMB mounts): not race-free, but works
            if not path.exists():
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    run_id = path.read_text().strip()
    if not run_id:  # an empty file, e.g. from a kill while an older version wrote it
        run_id = replace_run_id(save_dir, path)
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
    """`resume` is the run's top-level policy: `never` starts a new W&B run instead of continuing the old one;
    `server_timeout` is how long an online run waits for the W&B server before going offline (see reachable_mode)."""
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
