"""Nested mappings as dotted keys, the way an override names a config setting."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf of nested mappings; lists and empty mappings are leaves (`{}` differs from a value)."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix[:-1]: tree} if prefix else {}
    return {dotted: leaf for key, value in tree.items() for dotted, leaf in flatten(value, f"{prefix}{key}.").items()}
