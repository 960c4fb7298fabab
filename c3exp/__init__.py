"""c3exp: channel-attention experiments (C3, SE, CBAM) on CIFAR ResNets with Hydra + Lightning."""
from c3exp.config import compose
from c3exp.models import build_model

__all__ = ["build_model", "compose"]
__version__ = "0.1.0"
