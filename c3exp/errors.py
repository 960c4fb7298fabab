"""User-facing errors: one clear line, no traceback."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Mapping
from numbers import Real
from typing import Any


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


def check_keywords(
    settings: Mapping[str, Any], target: Callable[..., Any], key_prefix: str, owner: str, supplied: Collection[str] = ()
) -> None:
    """Every key of `settings` must be a parameter of `target` (other than those the code `supplied`).

    A config group passed as keyword arguments would otherwise fail deep inside with a TypeError.
    """
    accepted = [name for name in inspect.signature(target).parameters if name not in supplied]
    for key, value in settings.items():
        check(key in accepted, f"{key_prefix}{key}", value, f"{owner}: {', '.join(accepted)}")


class DataNotFoundError(RuntimeError):
    """Dataset files are missing and cannot be downloaded; the message says where we looked."""


class OverrideError(ValueError):
    """A command-line override Hydra cannot apply (unknown key, bad syntax); the message is Hydra's."""


class TrainerSettingError(ValueError):
    """Lightning's Trainer rejected the trainer settings (no such device here, an unknown precision)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""
