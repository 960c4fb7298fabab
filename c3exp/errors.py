"""User-facing errors: one clear line on stderr (`error: ...`) and exit status 2, no traceback."""
from __future__ import annotations

import errno
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad user setting. The CLI prints `error: <message>` and exits with status 2."""

    def __init__(self, key: str, value: Any, allowed: str | Iterable[Any]):
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(str(a) for a in allowed)
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not valid: expected {allowed}")


def check(condition: bool, key: str, value: Any, allowed: str | Iterable[Any]) -> None:
    """Raise ConfigError(key, value, allowed) unless `condition` holds."""
    if not condition:
        raise ConfigError(key, value, allowed)


def is_number(value: Any) -> bool:
    """A real-number setting: YAML's true/false are bools, which Python counts as numbers."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An integer setting: YAML's true/false are bools, which Python counts as ints."""
    return isinstance(value, int) and not isinstance(value, bool)


def imported(path: str, key: str) -> Any:
    """The object at import path `path` (`module.Name`, a config's `_target_`), or one line naming `key`."""
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(key, path, "the import path of a class or function (module.Name) on the Python path") from None


class DataNotFoundError(RuntimeError):
    """Dataset files are missing and cannot be downloaded; the message says where we looked."""


class OverrideError(ValueError):
    """A command-line override Hydra cannot apply (unknown key, bad syntax); the message is Hydra's."""


class TrainerSettingError(ValueError):
    """Lightning's Trainer rejected the trainer settings (no such device here, an unknown precision)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class FolderInUse(RuntimeError):
    """Another live process works in this folder: the CLI prints the message and exits with status 2."""


USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError, OverrideError, TrainerSettingError, FolderInUse)
#: A full disk (or quota), a read-only or foreign run folder: the user frees space or picks another folder.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def run_reporting_user_errors(fn: Callable[[], T]) -> T:
    """`fn()`; a user error or failed write: one line, exit status 2, also in train.log (silently skipped on a full disk)."""
    try:
        return fn()
    except Exception as err:
        message = str(err) if isinstance(err, USER_ERRORS) else cannot_write(err)
        if message is None:
            raise
    if logging.getLogger().handlers:
        raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
        try:
            logging.getLogger(__name__).error("error: %s", message)
        finally:
            logging.raiseExceptions = raise_exceptions
    fail(message)


def cannot_write(err: BaseException | None) -> str | None:
    """`cannot write PATH: reason` where a failed write is behind `err`, also wrapped (torch.save: RuntimeError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:  # a failed write() names no file: the run directory
            return f"cannot write {err.filename if err.filename is not None else run_dir()}: {err.strerror}"
        err = err.__cause__ or err.__context__
    return None


def run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else os.getcwd()
