"""The commands' `key=value` options: a dataclass per command, parsed and described (--help) from its fields.

Only OmegaConf is imported here, so that every command answers --help and bad options before torch loads.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ValidationError

from c3exp.errors import ConfigError, check, run_reporting_user_errors

HELP_FLAGS = ("-h", "--help")
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a text"}
T = TypeVar("T")


def option(help: str, default: Any = MISSING, metavar: str = "", choices: Sequence[str] = (), minimum: int | None = None) -> Any:
    """A field of a command's options: one line of help, its default (none: required), the values it takes."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar, "choices": tuple(choices),
                                                        "minimum": minimum})


def parse(options: type[T], args: Sequence[str], overrides: bool = False, positional: Sequence[str] = ()) -> tuple[T, list[str]]:
    """The options in `args` (bare words fill `positional` in order); with `overrides`, the arguments that are
    no option come back as config overrides, else each is one error line."""
    fields = {field.name: field for field in dataclasses.fields(options)}
    node, rest, bare = OmegaConf.structured(options), [], list(positional)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep and bare:
            key, value = bare.pop(0), arg
        elif key not in fields:
            check(overrides, key if sep else "argument", value if sep else arg,
                  f"one of the options {', '.join(f'{name}=' for name in fields)} (see --help)")
            rest.append(arg)
            continue
        set_option(node, fields[key], value)
    for key in OmegaConf.missing_keys(node):
        raise ConfigError(key, None, f"{fields[key].metadata['help']}: {key}={metavar(fields[key])}")
    return OmegaConf.to_object(node), rest


def set_option(node: Any, field: dataclasses.Field, value: str) -> None:
    """One option from its text, checked against its type, choices and minimum."""
    try:
        node[field.name] = value
    except ValidationError:
        raise ConfigError(field.name, value, TYPE_WORDS[field.type.split(" ")[0]]) from None
    got, meta = node[field.name], field.metadata
    check(not meta["choices"] or got in meta["choices"], field.name, got, meta["choices"])
    check(meta["minimum"] is None or got >= meta["minimum"], field.name, got, f"an integer >= {meta['minimum']}")


def metavar(field: dataclasses.Field) -> str:
    meta = field.metadata
    return meta["metavar"] or "|".join(meta["choices"]) or field.type.split(" ")[0].upper()


def usage(command: str, options: type | None = None) -> str:
    """`usage: c3exp COMMAND key=VALUE ... [key=value ...]`, the required options named."""
    required = [f"{field.name}={metavar(field)}" for field in (dataclasses.fields(options) if options else ())
                if field.default is MISSING]
    return f"usage: c3exp {' '.join([command, *required])} [key=value ...]"


def option_lines(options: type) -> list[str]:
    """A line per option: `key=VALUES  help (default)`."""
    lines = []
    for field in dataclasses.fields(options):
        shown = str(field.default).lower() if isinstance(field.default, bool) else field.default  # as typed: true, false
        default = "required" if field.default is MISSING else None if field.default is None else f"default {shown}"
        lines.append(f"  {field.name + '=' + metavar(field):<22}{field.metadata['help']}" + (f" ({default})" if default else ""))
    return lines


def help_text(command: str, doc: str, options: type | None = None) -> str:
    """The usage line, the command's description (`doc`), then its options."""
    lines = [usage(command, options), "", inspect.cleandoc(doc)]
    return "\n".join(lines + (["", "options:", *option_lines(options)] if options else []))


def command(argv: Sequence[str] | None, help: Callable[[], str], run: Callable[[list[str]], T]) -> T | None:
    """`run(args)` (default: the command line's), a user error one line and status 2; -h/--help prints `help()`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in HELP_FLAGS for arg in args):
        print(help())
        return None
    return run_reporting_user_errors(lambda: run(args))
