"""metrics.csv replaced whole at each save and carried over on resume; W&B grouped per sweep, offline or resumed."""
from __future__ import annotations

import csv
import http.client
import logging
import os
import secrets
import string
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from c3exp.errors import ConfigError, check
from c3exp.training.sweep import in_multirun
from c3exp.utils.atomic import atomic_write, remove_temps, write_text

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("auto", "online", "offline", "disabled")
HISTORY_TO_CSV = {"lr": "train/lr"}  # history keys the loggers get under another name
Row = dict[str, Any]


def resolve_mode(mode: str) -> str:
    """`auto`: an exported WANDB_MODE (which a passed mode overrides), online with credentials, else offline."""
    check(mode in MODES, "logger.wandb.mode", mode, MODES)
    if mode != "auto":
        return mode
    env_mode = os.environ.get("WANDB_MODE", "")
    if env_mode in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env_mode == "dryrun" else env_mode  # dryrun: wandb's old name for offline
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    in_netrc = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return "online" if os.environ.get("WANDB_API_KEY") or in_netrc else "offline"


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
    path, run_id = save_dir / RUN_ID_FILE, new_run_id() + "\n"
    save_dir.mkdir(parents=True, exist_ok=True)
    empty = path.is_file() and not path.read_text().strip()  # a kill while an older version wrote it
    if empty or (resume == "never" and rank_zero_only.rank == 0):  # other ranks (DDP children start later) read it
        write_text(path, run_id)
    try:
        with tempfile.NamedTemporaryFile("w", dir=save_dir, prefix=f".{RUN_ID_FILE}.") as tmp:
            tmp.write(run_id)
            tmp.flush()
            os.link(tmp.name, path)
    except FileExistsError:  # kept from an earlier start, or another process of this run created it first
        pass
    except OSError:  # a filesystem without hard links (some FUSE/SMB mounts): not race-free, but works
        if not path.exists():
            write_text(path, run_id)
    return path.read_text().strip()


def wandb_logger(project: str, save_dir: str, name: str, config_key: str, group: str | None, tags: list[str] | None,
                 mode: str, resume: str | None, server_timeout: float, **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger (given `kwargs`), one group per sweep and config (all seeds together); see reachable_mode."""
    sweep = f"{Path(HydraConfig.get().sweep.dir).name}/" if in_multirun() else ""
    return WandbLogger(project=project, name=name, group=group or sweep + config_key, tags=list(tags or []),
                       save_dir=str(Path(save_dir)), id=persistent_run_id(Path(save_dir), resume), resume="allow",
                       mode=reachable_mode(mode, server_timeout), **kwargs)


def _number(row: Row, key: str) -> float:
    """row[key] as a number: inf where it is empty or not a number (rows without a step sort last)."""
    try:
        return float("inf" if row.get(key) in ("", None) else row[key])
    except (TypeError, ValueError):
        return float("inf")


def rows_from_history(rows: list[Row], history: list[Row], global_step: int) -> list[Row]:
    """Per epoch, the history's metrics its rows lack, at their step, else at its end (epochs taken as equally long)."""
    rebuilt = []
    for entry in history:
        epoch = int(entry["epoch"])
        logged = [row for row in rows if _number(row, "epoch") == epoch]
        present = {key for row in logged for key, value in row.items() if value not in ("", None)}
        named = {HISTORY_TO_CSV.get(key, key): value for key, value in entry.items() if key != "epoch"}
        missing = {key: value for key, value in named.items() if key not in present}
        end = max((epoch + 1) * global_step // (int(history[-1]["epoch"]) + 1) - 1, 0)
        if missing:
            rebuilt.append({"epoch": epoch, "step": max((int(_number(row, "step")) for row in logged), default=end),
                            **missing})
    return rebuilt


def carry_over_csv_rows(logger: CSVLogger, checkpoint: str | Path, global_step: int, history: list[Row]) -> int:
    """How many rows before `checkpoint`'s step went into `logger`'s metrics.csv (later ones: work resumed anew)."""
    source, kept = Path(checkpoint).resolve().parent.parent / Path(logger.log_dir).name / "metrics.csv", []
    if source.is_file():  # read before Lightning's own writer below deletes the file; empty cells left out
        with source.open(newline="") as file:
            kept = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(file)
                    if _number(row, "step") < global_step]
    rows = sorted([*kept, *rows_from_history(kept, history, global_step)], key=lambda row: _number(row, "step"))
    with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows they hold are kept here
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        writer = logger.experiment
    writer.metrics.extend(rows)
    writer.save()
    return len(rows)


class ReplacingCSVWriter(ExperimentWriter):
    """Lightning's writer keeping every row (a few an epoch) to replace metrics.csv whole at each save."""

    def __init__(self, log_dir: str) -> None:  # not Lightning's: it deletes the metrics.csv a resume carries over
        self.log_dir, self.hparams = log_dir, {}
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[Row] = []  # logged since the last save (CSVLogger counts them)
        self.saved: list[Row] = []
        os.makedirs(log_dir, exist_ok=True)
        remove_temps(Path(log_dir), self.NAME_METRICS_FILE)  # left by a killed save; this process is the only writer

    def save(self) -> None:
        if self.metrics:
            self.saved.extend(self.metrics)
            self.metrics = []
            with atomic_write(self.metrics_file_path, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=sorted(set().union(*self.saved)))
                writer.writeheader()
                writer.writerows(self.saved)


class ReplacingCSVLogger(CSVLogger):
    """CSVLogger (same arguments, same files) whose metrics.csv is replaced whole at each save, never truncated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer: ReplacingCSVWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ReplacingCSVWriter:
        if self._writer is None:
            self._writer = ReplacingCSVWriter(self.log_dir)
        return self._writer

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._writer is not None:  # other DDP processes never started one
            self.save()
