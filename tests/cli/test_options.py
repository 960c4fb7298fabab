"""The commands' key=value options (c3exp/cli/options.py): typed, checked and described from a dataclass."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from c3exp.cli.options import help_text, option, parse
from c3exp.errors import ConfigError
from c3exp.schema import PositiveInt


@dataclass
class Options:
    path: str = option("the input", metavar="PATH")
    count: PositiveInt = option("how many", 2)
    split: Literal["val", "test"] = option("which split", "val")
    score: float = option("the lowest score", 0.5)
    out: str | None = option("where to", None, metavar="DIR")
    verbose: bool = option("say more", False)


def test_values_take_their_field_types_and_defaults_fill_the_rest():
    options, rest = parse(Options, ["path=a.ckpt", "count=3", "score=1", "verbose=true"])
    assert options == Options(path="a.ckpt", count=3, split="val", score=1.0, out=None, verbose=True) and rest == []


def test_bare_words_fill_the_positional_options_and_overrides_come_back_in_order():
    options, rest = parse(Options, ["a.ckpt", "data.root=/x", "split=test", "model=resnet56"], overrides=True,
                          positional=["path"])
    assert (options.path, options.split) == ("a.ckpt", "test") and rest == ["data.root=/x", "model=resnet56"]


@pytest.mark.parametrize(
    "args, key, value, allowed",
    [
        (["path=a", "count=x"], "count", "x", "an integer"),
        (["path=a", "count=0"], "count", 0, "an integer >= 1"),
        (["path=a", "score=high"], "score", "high", "a number"),
        (["path=a", "verbose=maybe"], "verbose", "maybe", "true or false"),
        (["path=a", "split=train"], "split", "train", "one of val, test"),
        (["path=a", "nope=1"], "nope", "1", "one of the options path=, count=, split=, score=, out=, verbose= (see --help)"),
        (["path=a", "word"], "argument", "word", "one of the options path=, count="),
        (["count=3"], "path", None, "the input: path=PATH"),
    ],
)
def test_a_bad_option_names_the_key_the_value_and_what_is_allowed(args, key, value, allowed):
    with pytest.raises(ConfigError) as error:
        parse(Options, args)
    assert (error.value.key, error.value.value) == (key, value) and error.value.allowed.startswith(allowed)


def test_help_names_every_option_with_its_values_and_default():
    lines = help_text("thing", "Does a thing.", Options).splitlines()
    assert lines[:3] == ["usage: c3exp thing path=PATH [key=value ...]", "", "Does a thing."]
    assert lines[-6:] == [
        "  path=PATH             the input (required)",
        "  count=INT             how many (default 2)",
        "  split=val|test        which split (default val)",
        "  score=FLOAT           the lowest score (default 0.5)",
        "  out=DIR               where to",
        "  verbose=BOOL          say more (default false)",
    ]
