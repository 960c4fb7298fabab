"""The config's schema is the constructors' signatures: a parameter's hint (annotated_types bounds, Literal choices, a
note in `Annotated`) checks a config's value where its node is built, before data is read; other keys are unknown."""
from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types as at

from c3exp.errors import ConfigError, is_int, is_number

Hint = Any
BOUNDS = ((at.Ge, "ge", ">=", lambda v, b: v >= b), (at.Gt, "gt", ">", lambda v, b: v > b),
          (at.Le, "le", "<=", lambda v, b: v <= b), (at.Lt, "lt", "<", lambda v, b: v < b))
#: The hints of YAML's scalars: their words in error messages, and whether a config value fits them.
SCALARS: dict[Hint, tuple[str, Callable[[Any], bool]]] = {
    type(None): ("null", lambda value: value is None),
    bool: ("true or false", lambda value: isinstance(value, bool)),
    int: ("an integer", is_int),
    float: ("a number", lambda value: is_number(value) and math.isfinite(value)),
    str: ("a string", lambda value: isinstance(value, str)),
    Path: ("a path", lambda value: isinstance(value, (str, Path))),
}
#: Libraries whose `**kwargs` go elsewhere than to the base class (torchvision's FasterRCNN: to its transform).
NOT_FORWARDING = ("torch", "torchvision", "lightning")


def check_settings(settings: Mapping[str, Any], target: Callable[..., Any], prefix: str, supplied: Collection[str] = ()) -> None:
    """Every key of `settings` a parameter of `target` (not one c3exp supplies), its value of the parameter's type."""
    params = parameters(target)
    accepted = [name for name in params if name not in supplied]
    for key, value in settings.items():
        if key not in accepted:
            name = f"{target.__module__}.{target.__qualname__}"
            raise ConfigError(f"{prefix}{key}", value, f"a setting of {name}: {', '.join(accepted)}")
        hint = params[key]
        if not conforms(value, hint):
            raise ConfigError(f"{prefix}{key}", value, describe(hint))


def check_complete(settings: Mapping[str, Any], target: Callable[..., Any], prefix: str, supplied: Collection[str] = ()) -> None:
    """Every parameter of `target` (its bases' that its `**kwargs` reach too) without a default has a value: the YAML
    holds the defaults (`~key` deletes one). A class's `fixed` settings are those it passes its bases itself."""
    has_default: dict[str, bool] = {}  # bases first: a subclass's own declaration (a default of its own) wins
    for function in reversed(_constructors(target)):
        has_default.update({p.name: p.default is not p.empty for p in inspect.signature(function).parameters.values()
                            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
    given = (*settings, *supplied, *getattr(target, "fixed", ()), "self")
    missing = [name for name, default in has_default.items() if not default and name not in given]
    if missing:
        name = f"{target.__module__}.{target.__qualname__}"
        raise ConfigError(f"{prefix}{missing[0]}", "???", f"a value: {name} has no default for it, its config sets it")


@functools.cache
def parameters(target: Callable[..., Any]) -> dict[str, Hint]:
    """Keyword parameters -> type hints (Any where none); a class's `**kwargs` followed to its bases' __init__.
    Cached (a network builds a block per insertion point): callers read the dict, never change it."""
    found: dict[str, Hint] = {}
    for function in _constructors(target):
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except (NameError, TypeError):
            hints = {}  # hints that name what the module imports only for type checkers
        for name, param in inspect.signature(function).parameters.items():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and name not in ("self", *found):
                found[name] = hints.get(name, Any)
    return found


def _constructors(target: Callable[..., Any]) -> list[Callable[..., Any]]:
    if not isinstance(target, type):
        return [target]
    chain = []
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        chain.append(cls.__init__)
        takes_more = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
        if not takes_more or cls.__module__.split(".")[0] in NOT_FORWARDING:
            break
    return chain or [target]


def _parts(hint: Hint) -> tuple[Hint, list[Any]]:
    """`Annotated[T, *rules]` -> (T, rules); any other hint -> (hint, [])."""
    if typing.get_origin(hint) is Annotated:
        base, *rules = typing.get_args(hint)
        return base, [rule for item in rules for rule in (item if isinstance(item, at.GroupedMetadata) else [item])]
    return hint, []


def conforms(value: Any, hint: Hint) -> bool:
    """Whether a config value (YAML's: None, bool, int, float, str, list, dict) fits `hint`."""
    base, rules = _parts(hint)
    if not _base_conforms(value, base):
        return False
    for rule in rules:
        if isinstance(rule, at.Predicate) and not rule.func(value):
            return False
        if isinstance(rule, at.MinLen) and len(value) < rule.min_length:
            return False
        for kind, attribute, _, test in BOUNDS:
            if isinstance(rule, kind) and not test(value, getattr(rule, attribute)):
                return False
    return True


def _base_conforms(value: Any, hint: Hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, member) for member in args)
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in args)
    if hint in SCALARS:
        return SCALARS[hint][1](value)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return _is_list(value) and len(value) == len(args) and all(map(conforms, value, args))
    if origin in (list, tuple, Sequence):
        return _is_list(value) and all(conforms(item, args[0]) for item in value) if args else _is_list(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    return True  # an object type (a module, a callable): not something a YAML value is checked against


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def describe(hint: Hint) -> str:
    """What `hint` allows, in the words of error messages: `null or an integer >= 1`."""
    base, rules = _parts(hint)
    words = _describe_base(base)
    bounds = [(sign, getattr(rule, attribute)) for rule in rules for kind, attribute, sign, _ in BOUNDS if isinstance(rule, kind)]
    if [sign for sign, _ in bounds] == [">=", "<="]:
        words += f" from {bounds[0][1]} to {bounds[1][1]}"
    elif bounds:
        words += " " + " and ".join(f"{sign} {bound}" for sign, bound in bounds)
    for rule in rules:
        if isinstance(rule, at.MinLen):
            words = words.replace("a list", f"a list of at least {rule.min_length}", 1)
    notes = [rule for rule in rules if isinstance(rule, str)]
    return f"{words} ({'; '.join(notes)})" if notes else words


def _describe_base(hint: Hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        members = sorted(args, key=lambda member: member is not type(None))  # null first
        return " or ".join(describe(member) for member in members)
    if origin is Literal:
        return f"one of {', '.join(str(choice) for choice in args)}" if len(args) > 1 else str(args[0])
    if hint in SCALARS:
        return SCALARS[hint][0]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"[{', '.join(describe(arg) for arg in args)}]"
    if args and origin in (list, tuple, Sequence):
        return f"a list, each {describe(args[0])}"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping of settings"
    return "a value"


PositiveInt = Annotated[int, at.Ge(1)]
NonNegativeInt = Annotated[int, at.Ge(0)]
PositiveFloat = Annotated[float, at.Gt(0)]
NonNegativeFloat = Annotated[float, at.Ge(0)]
Probability = Annotated[float, at.Interval(ge=0, le=1)]
OddPositiveInt = Annotated[int, at.Ge(1), at.Predicate(lambda value: value % 2 == 1), "odd"]
SpatialSize = tuple[PositiveInt, PositiveInt]  # a block's [H, W]
