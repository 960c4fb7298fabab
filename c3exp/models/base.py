"""The container every network is, c3exp's and one's own backbones alike: stem -> stages -> head; torchvision's init."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class ResNet(nn.Module):
    """stem, stages, head: the heads of other tasks, the analysis and the size checks read the stages."""

    def __init__(self, stem: nn.Module, stages: Iterable[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """What a head on `stage_outputs` is built for."""
        return tuple(stage_out_channels(stage) for stage in self.stages)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map, in order (channel correlations read them all)."""
        outputs = [self.stem(x)]
        for stage in self.stages:
            outputs.append(stage(outputs[-1]))
        return outputs[1:]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def attention_modules(net: nn.Module) -> set[nn.Module]:
    """Every module inside an attention block of `net` (blocks mark themselves `is_attention`)."""
    gates = [module for module in net.modules() if getattr(module, "is_attention", False)]
    return {inner for gate in gates for inner in gate.modules()}


def stage_out_channels(stage: nn.Module) -> int:
    """Those of its last convolution outside attention (CBAM's 2 -> 1 convolution is not the stage's)."""
    attention = attention_modules(stage)
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m not in attention]
    if not convs:
        raise ValueError(f"no convolution in stage {type(stage).__name__} to read its output channels from")
    return convs[-1].out_channels


NUM_CLASSES_HINT = ("a positive integer (imagefolder counts the class folders under data.root; "
                    "without them set data.num_classes=N)")


def classifier_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def init_weights(model: nn.Module) -> None:
    """torchvision's scheme; attention blocks' own `reset_parameters` (identity starts) run afterwards."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.reset_parameters()  # weight 1, bias 0, fresh running statistics
    for module in model.modules():
        if getattr(module, "is_attention", False) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
