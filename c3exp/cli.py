"""Turn user errors into one line on stderr and exit status 2, instead of a traceback."""
from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from c3exp.errors import ConfigError, DataNotFoundError, NonFiniteLossError, OverrideError, TrainerSettingError
from c3exp.training.locks import FolderInUse

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError, OverrideError, TrainerSettingError, FolderInUse)
T = TypeVar("T")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


HELP_FLAGS = ("-h", "--help")


def printed_help(args: Sequence[str], usage: str) -> bool:
    """-h/--help anywhere on a command line prints `usage` (and the command then stops)."""
    if any(arg in HELP_FLAGS for arg in args):
        print(usage)
        return True
    return False


def run_reporting_user_errors(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except USER_ERRORS as err:
        fail_logged(str(err))
        raise  # unreachable: fail_logged() exits
    except Exception as err:
        message = cannot_write(err)
        if message is None:
            raise
        fail_logged(message)
        raise  # unreachable: fail_logged() exits


#: A full disk (or quota), a read-only or foreign run folder: the user frees space or picks another folder.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def write_error(err: BaseException | None) -> OSError | None:
    """The failed write behind `err`, also where a library wrapped it (torch.save turns ENOSPC into a RuntimeError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def cannot_write(err: BaseException) -> str | None:
    """`cannot write PATH: reason` where a failed write (full disk, read-only folder) is behind `err`, else None."""
    failed = write_error(err)
    return None if failed is None else f"cannot write {written_path(failed)}: {failed.strerror}"


def written_path(err: OSError) -> str:
    """The file that failed, or the run directory (a failed write() does not say which file)."""
    if err.filename is not None:
        return str(err.filename)
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else os.getcwd()


def fail_logged(message: str) -> None:
    """fail(), with the line also in the run's log (train.log, through Hydra's file handler), where the run's story ends.

    Only where logging is set up (a run): elsewhere logging's last-resort handler would print the line twice.
    On a full disk the log line itself may not fit: logging then skips it silently instead of printing a traceback.
    """
    if logging.getLogger().handlers:
        raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
        try:
            logging.getLogger(__name__).error("error: %s", message)
        finally:
            logging.raiseExceptions = raise_exceptions
    fail(message)
