"""The commands' `key=value` options: a dataclass per command, parsed, checked (c3exp.schema) and described (--help)
from its fields. Nothing heavy is imported here: every command answers --help and bad options before torch loads."""
from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING
from typing import Any, Literal, TypeVar

import yaml

from c3exp.errors import ConfigError, check, run_reporting_user_errors
from c3exp.schema import check_settings, conforms, parameters

HELP_FLAGS = ("-h", "--help")
T = TypeVar("T")


def option(help: str, default: Any = MISSING, metavar: str = "") -> Any:
    """A command's option: one line of help and its default (none: required); its type hint says what it takes."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


def parse(options: type[T], args: Sequence[str], overrides: bool = False, positional: Sequence[str] = ()) -> tuple[T, list[str]]:
    """`args` as options (bare words fill `positional`); other arguments are overrides if `overrides`, else errors."""
    fields, hints = {field.name: field for field in dataclasses.fields(options)}, parameters(options)
    values, rest, bare = {}, [], list(positional)
    for arg in args:
        key, sep, text = arg.partition("=")
        if not sep and bare:
            key, text = bare.pop(0), arg
        elif key not in fields:
            check(overrides, key if sep else "argument", text if sep else arg,
                  f"one of the options {', '.join(f'{name}=' for name in fields)} (see --help)")
            rest.append(arg)
            continue
        values[key] = value_of(text, hints[key])
    for key, field in fields.items():
        if key not in values and field.default is MISSING:
            raise ConfigError(key, None, f"{field.metadata['help']}: {key}={metavar(options, field)}")
    check_settings(values, options, "")
    return options(**values), rest


def value_of(text: str, hint: Any) -> Any:
    """What `text` stands for as YAML reads it (null, true, 3, 0.5), or the text itself where `hint` takes text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if not conforms(value, hint) and conforms(text, hint) else value


def metavar(options: type, field: dataclasses.Field) -> str:
    """How --help shows an option's value: its metavar, its choices, or its type (X of `X | None`)."""
    if field.metadata["metavar"]:
        return field.metadata["metavar"]
    hint = typing.get_type_hints(options)[field.name]  # without Annotated's bounds
    base = typing.get_args(hint)[0] if type(None) in typing.get_args(hint) else hint
    choices = typing.get_args(base) if typing.get_origin(base) is Literal else ()
    return "|".join(map(str, choices)) or {int: "INT", float: "FLOAT", bool: "BOOL"}.get(base, "STR")


def help_text(command: str, doc: str, options: type | None = None) -> str:
    """Usage naming the required options, `doc`, then per option `key=VALUES  help (default)` (bools as typed)."""
    fields = dataclasses.fields(options) if options else ()
    required = "".join(f" {field.name}={metavar(options, field)}" for field in fields if field.default is MISSING)
    lines = [f"usage: c3exp {command}{required} [key=value ...]", "", inspect.cleandoc(doc)]
    lines += ["", "options:"] if fields else []
    for field in fields:
        shown = str(field.default).lower() if isinstance(field.default, bool) else field.default
        default = {MISSING: " (required)", None: ""}.get(field.default, f" (default {shown})")
        lines.append(f"  {field.name + '=' + metavar(options, field):<22}{field.metadata['help']}{default}")
    return "\n".join(lines)


def command(argv: Sequence[str] | None, help: Callable[[], str], run: Callable[[list[str]], T]) -> T | None:
    """`run(args)` (default: the command line's), a user error one line and status 2; -h/--help prints `help()`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in HELP_FLAGS for arg in args):
        print(help())
        return None
    return run_reporting_user_errors(lambda: run(args))
