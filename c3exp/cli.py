"""Turn user errors into one line on stderr and exit status 2, instead of a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from c3exp.errors import ConfigError, DataNotFoundError, NonFiniteLossError, OverrideError, TrainerSettingError

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError, OverrideError, TrainerSettingError)
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
        fail(str(err))
        raise  # unreachable: fail() exits
