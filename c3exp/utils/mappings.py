"""Nested mappings as dotted keys, the way an override names a config setting."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf of nested mappings; lists and empty mappings are leaves (`{}` differs from a value)."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix[:-1]: tree} if prefix else {}
    return {dotted: leaf for key, value in tree.items() for dotted, leaf in flatten(value, f"{prefix}{key}.").items()}


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a config, nested or flattened with '.' or '/' (W&B's); None if absent."""
    for flat in (dotted, dotted.replace(".", "/")):
        if flat in config:
            return config[flat]
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
