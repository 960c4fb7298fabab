"""Argument parsing for the analysis and report commands: bad input is one `error:` line, status 2."""
from __future__ import annotations

import argparse
from typing import NoReturn

from c3exp.cli import fail


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error prints `error: <message>` only (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")
        raise AssertionError("unreachable")  # fail() exits


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, with the bad value and the rule named when it is not."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: expected an integer >= 1")
    return value
