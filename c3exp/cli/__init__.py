"""`c3exp <command> [key=value ...]`: one entry for every command; without a command name it trains."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from c3exp.cli.options import HELP_FLAGS
from c3exp.errors import ConfigError, fail

COMMANDS = ("train", "eval", "report", "summary", "analyze", "bench", "demo")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command `argv` names (default: the command line); None, as a console script's exit status 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in HELP_FLAGS:  # the commands, one line each: the first line of each module's docstring
        docs = {name: importlib.import_module(f"c3exp.cli.{name}").__doc__ for name in COMMANDS}
        lines = [f"  {name:<9}{doc.splitlines()[0]}" for name, doc in docs.items()]
        print("\n".join(["usage: c3exp <command> [key=value ...]   (no command: train)", "", "commands:", *lines, "",
                         "c3exp <command> --help: its options. python -m c3exp.<command> runs the same."]))
        return
    name = "train"  # c3exp key=value ... and c3exp -m ...: the training command, as before there were others
    if args[:1] and args[0][:1].isalpha() and "=" not in args[0]:  # a word: a command's name, no override or flag
        if args[0] not in COMMANDS:
            fail(str(ConfigError("command", args[0], COMMANDS)))
        name = args.pop(0)
    importlib.import_module(f"c3exp.cli.{name}").main(args)
