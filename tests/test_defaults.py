"""No default written twice (issue 24): a key that a conf/ node sets for one of c3exp's own constructors has its
default only in the YAML, never also in the constructor's signature. A library's signature (Lightning's, torch's) is
not ours to change: a YAML value equal to its default is fine, the key is listed to be overridable. No key is exempt:
an interpolated value (`seed: ${seed}`, `${oc.select:data.mean,[...]}`) has its default where it is interpolated from,
and c3exp builds these nodes only from the configs. An attn config's keys for its block are its `options`
(the block protocol: `Block(channels=C, **options)`)."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import OmegaConf

from c3exp.config import compose, group_choices
from c3exp.paths import config_dir
from c3exp.saved_config import HYDRA_KEYS
from c3exp.schema import _constructors

Place = tuple[str | int, ...]


def layers(path: Path) -> list[tuple[Path, Any]]:
    """A config file, after the configs of its own folder that its defaults list extends (`base/image@_here_`)."""
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    found = []
    for entry in tree.pop("defaults", []) if isinstance(tree, dict) else []:
        base = path.parent / f"{entry.removesuffix('@_here_')}.yaml" if isinstance(entry, str) else None
        if base is not None and base.is_file():  # not _self_, another group's choice or an override
            found += layers(base)
    return [*found, (path, tree)]


def targeted_nodes(tree: Any, package: str, place: Place = ()) -> Iterator[tuple[Place, dict[str, Any]]]:
    """Every mapping in `tree` whose `_target_` lies in `package`, with where it is."""
    if isinstance(tree, dict):
        if str(tree.get("_target_", "")).startswith(f"{package}."):
            yield place, tree
        items = tree.items()
    else:
        items = enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield from targeted_nodes(value, package, (*place, key))


def own_defaults(target: Callable[..., Any], package: str) -> dict[str, Any]:
    """The defaults `package` writes for `target`'s keywords, each from the first constructor along the MRO with it."""
    taken, defaults = set(), {}
    for function in _constructors(target):
        ours = function.__module__.split(".")[0] == package
        for name, param in inspect.signature(function).parameters.items():
            if name not in taken and param.default is not param.empty and ours:
                defaults[name] = param.default
            taken.add(name)
    return defaults


def select(tree: Any, place: Place) -> Any:
    """The value at `place` in one layer's tree, or None where that layer does not reach it."""
    for part in place:
        if isinstance(tree, dict):
            tree = tree.get(part)
        elif isinstance(tree, list) and isinstance(part, int) and part < len(tree):
            tree = tree[part]
        else:
            return None
    return tree


def violations(conf: Path, package: str = "c3exp") -> list[str]:
    """'file: key=value, default d in target' for each key set in a file of `conf` that `package` also defaults."""
    found = set()
    for path in sorted(conf.rglob("*.yaml")):
        stack = layers(path)
        merged = OmegaConf.to_container(OmegaConf.merge(*[tree or {} for _, tree in stack]), resolve=False)
        for place, node in targeted_nodes(merged, package):
            if path.parent.name == "attn" and place == ():
                place, node = ("options",), {"_target_": node["_target_"], **(node.get("options") or {})}
            defaults = own_defaults(get_object(node["_target_"]), package)
            for key in sorted(node.keys() - HYDRA_KEYS):
                if key in defaults:
                    source = next(file for file, tree in reversed(stack) if key in (select(tree, place) or {}))
                    dotted = ".".join(map(str, (*place, key)))
                    found.add(f"{source.relative_to(conf)}: {dotted}={node[key]!r}, "
                              f"default {defaults[key]!r} in {node['_target_']}")
    return sorted(found)


def test_a_key_a_config_sets_has_no_default_in_c3exps_signature():
    found = violations(config_dir())
    assert not found, f"{len(found)} defaults written twice (drop them from the signature):\n" + "\n".join(found)


def test_the_composed_group_nodes_keep_the_rule_too():
    """Keys the primary config adds to a group's node (conf/config.yaml's task.channels_last) are in no group file."""
    found = []
    for group in ("task", "data", "model", "attn"):
        for choice in group_choices(group):
            node = OmegaConf.to_container(compose([f"{group}={choice}"])[group], resolve=False)
            if node["_target_"] is None:  # attn=none builds nothing
                continue
            prefix = group
            if group == "attn":  # a block's keys are its options
                prefix, node = "attn.options", {"_target_": node["_target_"], **node["options"]}
            defaults = own_defaults(get_object(node["_target_"]), "c3exp")
            keys = sorted(node.keys() - HYDRA_KEYS)
            found += [f"{group}={choice}: {prefix}.{key}" for key in keys if key in defaults]
    assert not found, "defaults written twice:\n" + "\n".join(found)


FAKE_MODULE = '''
import torch


class Base:
    def __init__(self, size: int, scale: float = 1.0):
        self.size, self.scale = size, scale


class Child(Base):
    def __init__(self, depth: int = 2, **kwargs):
        super().__init__(**kwargs)


class Head(torch.nn.Linear):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)


def build(width: int, height: int = 3):
    return width * height


def gate(channels: int, init: float = 0.0, spatial_size: tuple[int, int] | None = None):
    return channels * init
'''
FAKE_CONFIGS = {
    "net/child.yaml": "_target_: fake_defaults_pkg.Child\ndepth: 4\nsize: 8\nscale: 2.0\n",
    "net/base/shared.yaml": "height: 3\nwidth: 1\n",
    "net/built.yaml": "defaults:\n  - base/shared@_here_\n  - _self_\n"
                      "_target_: fake_defaults_pkg.build\n_partial_: true\n",
    "task/heads.yaml": "heads:\n  - _target_: fake_defaults_pkg.Head\n    in_features: 2\n    out_features: 2\n"
                       "    bias: false\nother:\n  _target_: collections.OrderedDict\n  depth: 1\n",
    "attn/gate.yaml": "_target_: fake_defaults_pkg.gate\nname: gate\noptions:\n  init: 0.5\n  spatial_sizes: null\n",
}


def test_a_default_written_twice_is_found_in_the_file_that_sets_it(tmp_path, monkeypatch):
    """Through **kwargs to the package's own base, through a base config and in an attn config's options; a library's
    default (torch's bias) and another package's target are not counted."""
    (tmp_path / "fake_defaults_pkg.py").write_text(FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = tmp_path / "conf"
    for name, text in FAKE_CONFIGS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    assert violations(conf, "fake_defaults_pkg") == [
        "attn/gate.yaml: options.init=0.5, default 0.0 in fake_defaults_pkg.gate",
        "net/base/shared.yaml: height=3, default 3 in fake_defaults_pkg.build",
        "net/child.yaml: depth=4, default 2 in fake_defaults_pkg.Child",
        "net/child.yaml: scale=2.0, default 1.0 in fake_defaults_pkg.Child",
    ]
