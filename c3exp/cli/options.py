"""The commands' `key=value` options: a dataclass per command, parsed, checked (c3exp.schema) and described (--help)
from its fields. Nothing heavy is imported here: every command answers --help and bad options before torch loads."""
from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING
from typing import Annotated, Any, Literal, TypeVar

import yaml

from c3exp.errors import ConfigError, check, run_reporting_user_errors
from c3exp.schema import check_settings, conforms

HELP_FLAGS = ("-h", "--help")
T = TypeVar("T")


def option(help: str, default: Any = MISSING, metavar: str = "") -> Any:
    """A field of a command's options: one line of help, its default (none: required); its type hint (c3exp.schema's
    kinds: Literal choices, annotated_types bounds) says what it takes."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


def parse(options: type[T], args: Sequence[str], overrides: bool = False, positional: Sequence[str] = ()) -> tuple[T, list[str]]:
    """The options in `args` (bare words fill `positional` in order); with `overrides`, the arguments that are
    no option come back as config overrides, else each is one error line."""
    fields, hints = {field.name: field for field in dataclasses.fields(options)}, typing.get_type_hints(options, include_extras=True)
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
            raise ConfigError(key, None, f"{field.metadata['help']}: {key}={metavar(field, hints[key])}")
    check_settings(values, options, "")
    return options(**values), rest


def value_of(text: str, hint: Any) -> Any:
    """What `text` stands for as YAML reads it (null, true, 3, 0.5), or the text itself where `hint` takes text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if not conforms(value, hint) and conforms(text, hint) else value


def metavar(field: dataclasses.Field, hint: Any) -> str:
    """How --help shows an option's value: its metavar, its choices, or its type."""
    if field.metadata["metavar"]:
        return field.metadata["metavar"]
    base = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint) if type(None) in typing.get_args(hint) else hint
    base = typing.get_args(base)[0] if typing.get_origin(base) is Annotated else base
    if typing.get_origin(base) is Literal:
        return "|".join(map(str, typing.get_args(base)))
    return {int: "INT", float: "FLOAT", bool: "BOOL"}.get(base, "STR")


def usage(command: str, options: type | None = None) -> str:
    """`usage: c3exp COMMAND key=VALUE ... [key=value ...]`, the required options named."""
    hints = typing.get_type_hints(options, include_extras=True) if options else {}
    required = [f"{field.name}={metavar(field, hints[field.name])}" for field in (dataclasses.fields(options) if options else ())
                if field.default is MISSING]
    return f"usage: c3exp {' '.join([command, *required])} [key=value ...]"


def option_lines(options: type) -> list[str]:
    """A line per option: `key=VALUES  help (default)`."""
    lines, hints = [], typing.get_type_hints(options, include_extras=True)
    for field in dataclasses.fields(options):
        shown = str(field.default).lower() if isinstance(field.default, bool) else field.default  # as typed: true, false
        default = "required" if field.default is MISSING else None if field.default is None else f"default {shown}"
        lines.append(f"  {field.name + '=' + metavar(field, hints[field.name]):<22}{field.metadata['help']}" + (f" ({default})" if default else ""))
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
