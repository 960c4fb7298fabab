"""c3exp: channel-attention experiments (C3, SE, CBAM) in CNNs, for any task, with Hydra + Lightning."""
from c3exp.config import compose
from c3exp.tasks import build_network as build_model

__all__ = ["build_model", "compose"]
__version__ = "0.1.0"
