"""c3exp: channel-attention experiments (C3, SE, CBAM) in CNNs, for any task, with Hydra + Lightning."""
from __future__ import annotations

from typing import Any

from c3exp.config import compose

__all__ = ["build_network", "compose"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`c3exp.build_network` imports torch on first use, so that config-only commands start fast."""
    if name == "build_network":
        from c3exp.tasks import build_network

        return build_network
    raise AttributeError(f"module 'c3exp' has no attribute {name!r}")
