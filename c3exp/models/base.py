"""The interface every network shares: stem -> stages -> head, plus torchvision's initialisation."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class ResNet(nn.Module):
    """stem, one module per stage, head: what the training, summary and analysis code rely on.

    `stage_outputs` returns every stage's map and `forward_features` the last one, before pooling
    (for channel statistics and CAMs);
    `forward` is exactly head(forward_features(x)), so parts can be measured one by one.
    """

    def __init__(self, stem: nn.Module, stages: Iterable[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Every stage's output channels, in order: what a head on `stage_outputs` is built for."""
        return tuple(stage_out_channels(stage) for stage in self.stages)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map, in order (channel correlations read them all)."""
        outputs = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def attention_modules(net: nn.Module) -> set[nn.Module]:
    """Every module inside an attention block (SE, CBAM, C3) of `net`: the blocks mark themselves `is_attention`."""
    gates = [module for module in net.modules() if getattr(module, "is_attention", False)]
    return {inner for gate in gates for inner in gate.modules()}


def stage_out_channels(stage: nn.Module) -> int:
    """The output channels of a stage of residual blocks: those of its last convolution outside attention.

    In a residual block the main path's last convolution and the projection shortcut both produce
    the block's output channels, whichever comes last in module order; attention modules (CBAM's
    2 -> 1 spatial convolution) keep the channel count and are skipped.
    """
    attention = attention_modules(stage)
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m not in attention]
    if not convs:
        raise ValueError(f"no convolution in stage {type(stage).__name__} to read its output channels from")
    return convs[-1].out_channels


# imagefolder leaves the class count to the folders under data.root; summary and bench have none to count.
NUM_CLASSES_HINT = "a positive integer (imagefolder counts the class folders under data.root; without them set data.num_classes=N)"


def classifier_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pool, flatten, linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def init_weights(model: nn.Module) -> None:
    """torchvision's scheme: Kaiming-normal convs (fan_out, ReLU), BN weight 1 and bias 0.

    Attention blocks with an initialisation of their own (a `reset_parameters` method: the non-local
    block's zero BN scale, GC's zero last layer, which make them start as the identity) get it back
    afterwards.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if getattr(module, "is_attention", False) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
