"""c3exp.schema: the constructors' type hints are the config's schema. The wording of a bad value is tested here
once per kind of hint; the registry-wide tests build every c3exp node with a bad value for each of its settings."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import pytest
from omegaconf import OmegaConf

from c3exp.config import check_node, compose, group_choices
from c3exp.errors import ConfigError, imported
from c3exp.schema import (OddPositiveInt, PositiveInt, Probability, check_complete, check_settings, conforms, describe,
                          parameters)

# hint, values it takes, values it refuses, its words in an error line
HINTS = [
    (bool, [True, False], [0, 1, "yes", None], "true or false"),
    (int, [0, -3, 7], [1.5, True, "2", None], "an integer"),
    (float, [0, 2.5, -1], [True, "1", math.inf, math.nan, None], "a number"),
    (str, ["a", ""], [1, None, ["a"]], "a string"),
    (PositiveInt, [1, 9], [0, -1, 1.5, True], "an integer >= 1"),
    (Probability, [0, 0.5, 1], [-0.1, 1.5], "a number from 0 to 1"),
    (OddPositiveInt, [1, 7], [2, 0, -1], "an integer >= 1 (odd)"),
    (Literal["tile", "interpolate"], ["tile"], ["Tile", None, 1], "one of tile, interpolate"),
    (Literal[32, 16], [32], ["32", 8, True], "one of 32, 16"),
    (PositiveInt | None, [None, 3], [0, "x"], "null or an integer >= 1"),
    (Annotated[int, at.Ge(0), "0: off"], [0], [-1], "an integer >= 0 (0: off)"),
    (Sequence[PositiveInt], [[], [1, 2], (3,)], ["12", [0], 5], "a list, each an integer >= 1"),
    (Annotated[Sequence[float], at.MinLen(1)], [[0.5]], [[]], "a list of at least 1, each a number"),
    (tuple[float, float], [[1, 2.5]], [[1], [1, 2, 3], ["a", 1]], "[a number, a number]"),
    (Mapping[str, Any], [{}, {"a": 1}], [[], "a"], "a mapping of settings"),
    (Any, [None, 1, "x", [1]], [], "a value"),
]


@pytest.mark.parametrize("hint,good,bad,words", HINTS, ids=lambda x: str(x)[:40] if not isinstance(x, list) else "")
def test_each_kind_of_hint_takes_its_values_and_names_what_it_allows(hint, good, bad, words):
    assert all(conforms(value, hint) for value in good), good
    assert not any(conforms(value, hint) for value in bad), bad
    assert describe(hint) == words
    def target(x): ...

    target.__annotations__ = {"x": hint}
    for value in bad:  # the one line of a bad value: key, value and what is allowed
        with pytest.raises(ConfigError) as error:
            check_settings({"x": value}, target, "node.")
        message = str(error.value)
        assert message == f"node.x={value!r} is not valid: expected {words}"
        assert "\n" not in message and error.value.key == "node.x"


def test_an_unknown_or_supplied_key_names_the_settings_there_are():
    def block(channels: int, reduction: PositiveInt = 8, gate: bool = True) -> None: ...

    for key in ("reducton", "channels"):
        with pytest.raises(ConfigError) as error:
            check_settings({key: 4}, block, "attn.options.", supplied=["channels"])
        assert str(error.value) == (f"attn.options.{key}=4 is not valid: expected a setting of "
                                    f"{__name__}.{block.__qualname__}: reduction, gate")


def test_a_setting_without_a_default_that_the_config_lacks_is_one_line():
    """Defaults live in the YAML: a key deleted on the command line (`~model.width`) leaves the builder without one."""
    def builder(num_classes: int, *, depth: PositiveInt, width: PositiveInt = 1) -> None: ...

    check_complete({"depth": 20}, builder, "model.", supplied=["num_classes"])  # width has its default
    with pytest.raises(ConfigError) as error:
        check_complete({"width": 2}, builder, "model.", supplied=["num_classes"])
    assert str(error.value) == (f"model.depth='???' is not valid: expected a value: {__name__}.{builder.__qualname__} "
                                "has no default for it, its config sets it")


def test_a_base_setting_without_a_default_is_required_unless_the_class_fixes_it():
    """`~data.batch_size` on a data module whose base takes batch_size: one line, not the constructor's TypeError."""
    class Base:
        def __init__(self, batch_size: PositiveInt, year: str): ...

    class Data(Base):
        fixed = {"year": "2012"}  # passed to Base by Data itself

        def __init__(self, root: str, seed: int = 0, **kwargs): ...

    class Detection(Data):  # declares Base's batch_size with a default of its own
        def __init__(self, *args, batch_size: int = 2, **kwargs): ...

    check_complete({"root": "x"}, Detection, "data.")

    check_complete({"root": "x", "batch_size": 8}, Data, "data.")
    with pytest.raises(ConfigError) as error:
        check_complete({"root": "x"}, Data, "data.")
    assert str(error.value).startswith("data.batch_size='???' is not valid: expected a value")


def test_a_class_forwarding_kwargs_has_its_bases_settings_and_the_subclass_hint_wins():
    class Base:
        def __init__(self, batch_size: PositiveInt = 8, seed: int = 0): ...

    class Data(Base):
        def __init__(self, root: str = "data", seed: Literal[0, 1] = 0, **kwargs: Any):
            super().__init__(**kwargs)

    assert list(parameters(Data)) == ["root", "seed", "batch_size"]
    assert parameters(Data)["seed"] == Literal[0, 1]


def composed(overrides: list[str]):
    return compose([*overrides, "hydra.run.dir=/tmp/unused"])


def bad_value(hint: Any) -> Any:
    """A value `hint` refuses: the first of a few YAML values of every type."""
    return next((value for value in ("not-a-value", -1, 0, 1.5, [], {}, True) if not conforms(value, hint)), None)


# node -> the config choices that build it, and the settings c3exp passes itself
NODES = {
    "attn.options": [f"attn={name}" for name in group_choices("attn") if name != "none"],
    "model": [f"model={name}" for name in group_choices("model")],
    "data": [f"data={name}" for name in group_choices("data")],
}
SUPPLIED = {"attn.options": ("channels", "spatial_size"), "model": ("num_classes", "attn", "input_size"), "data": ()}


def target_of(cfg: Any, node: str) -> Any:
    owner = node.removesuffix(".options")
    return imported(OmegaConf.select(cfg, f"{owner}._target_"), f"{owner}._target_")


@pytest.mark.parametrize("node,choice", [(node, choice) for node, choices in NODES.items() for choice in choices])
def test_every_setting_of_every_config_refuses_a_bad_value_in_one_line(node, choice):
    cfg = composed([choice, "task=detection"] if "detection" in choice or "coco" in choice else [choice])
    target = target_of(cfg, node)
    checked = {name: hint for name, hint in parameters(target).items() if name not in SUPPLIED[node]}
    bad = {name: bad_value(hint) for name, hint in checked.items() if bad_value(hint) is not None}
    assert bad or node == "attn.options", f"{choice}: no setting with a type to check"
    for name, value in bad.items():
        with pytest.raises(ConfigError) as error:
            check_settings({name: value}, target, f"{node}.", supplied=SUPPLIED[node])
        assert str(error.value).startswith(f"{node}.{name}={value!r} is not valid: expected "), str(error.value)


TASK_SUPPLIED = ["net", "num_classes", "optimizer", "scheduler", "scheduler_interval", "warmup_epochs", "run_config"]


@pytest.mark.parametrize("node,choice,supplied", [("data", "data=digits", []), ("task", "task=segmentation", TASK_SUPPLIED)])
def test_a_config_node_is_checked_against_its_target_with_the_supplied_keywords_left_out(node, choice, supplied):
    cfg = composed([choice])
    check_node(OmegaConf.select(cfg, node), node, supplied=supplied)
    for key in ("bogus",):
        with pytest.raises(ConfigError, match=rf"^{node}.{key}=1 is not valid: expected a setting of "):
            check_node({**OmegaConf.to_container(OmegaConf.select(cfg, node), resolve=True), key: 1}, node, supplied=supplied)
