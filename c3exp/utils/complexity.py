"""Parameter and multiply-accumulate counts, as Table 1 reports them.

MACs come from torch's own FLOP counter (convolutions, linear layers and matrix products; BN, ReLU,
pooling and softmax are free), halved. The paper's FLOPs (thop) also count BN and ReLU, so ours come
out about 2% lower for the same network. Counts are per image: work on the weights alone, done once
per forward whatever the batch (C3's merged decoder layer), is left out, as the batch amortises it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from c3exp.utils.modes import evaluating

InputShape = tuple[int, int, int, int]


@dataclass(frozen=True)
class PartCost:
    """Parameters and MACs of one named part of a network (stem, stage1, ..., head)."""

    name: str
    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    """Every parameter (weights, biases, BN affine), not buffers such as BN running statistics."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: InputShape = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of a forward pass in eval mode over the `input_shape[0]` images of `input_shape`."""
    with evaluating(model):
        return _macs_of(model, _meta_input(model, input_shape))[0]


def data_input_shape(data: Any) -> InputShape:
    """One image as the network sees it in training: what counts are per.

    `data.crop_size` where the data is cropped (segmentation), a square of `data.min_size` where images
    are resized to a shorter side (detection; the largest of a list), else `data.image_size`;
    `data.channels`, RGB where unset.
    """
    min_size = data.get("min_size")
    if min_size is not None and not isinstance(min_size, int):
        min_size = max(min_size)
    size = data.get("crop_size") or min_size or data.image_size
    return (1, data.get("channels", 3), size, size)


def per_image_network(net: nn.Module) -> nn.Module:
    """The part of `net` whose work is per image: a detector's backbone and FPN.

    A detector's RPN and box head work on proposals whose number depends on the data, not on the shapes.
    """
    return net.backbone if isinstance(net, GeneralizedRCNN) else net


def model_complexity(net: nn.Module, data: Any) -> dict[str, int]:
    """Parameters and per-image MACs of `net` (a detector: of its backbone and FPN) on a data config's images."""
    return {"params": count_params(net), "macs": count_macs(per_image_network(net), data_input_shape(data))}


def part_costs(model: nn.Module, input_shape: InputShape = (1, 3, 32, 32)) -> list[PartCost]:
    """Costs of stem, stage1..N and head of a network with the stem/stages/head interface.

    The parts run one after the other exactly as `forward` does, so the MACs add up to count_macs.
    """
    parts = [("stem", model.stem), *((f"stage{i + 1}", s) for i, s in enumerate(model.stages)), ("head", model.head)]
    costs = []
    with evaluating(model):
        x = _meta_input(model, input_shape)
        for name, part in parts:
            macs, x = _macs_of(part, x)
            costs.append(PartCost(name, count_params(part), macs))
    return costs


def _macs_of(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs of module(x) that grow with the batch, and its output, on shape-only meta tensors.

    The count is the difference between a batch twice the size of x and x itself, which leaves out
    per-call work on weights alone. Meta stand-ins replace the model's own tensors for the calls.
    """
    stand_ins = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers())
    }
    with FlopCounterMode(display=False) as single:
        out = functional_call(module, stand_ins, (x,))
    with FlopCounterMode(display=False) as double:
        functional_call(module, stand_ins, (x.new_empty((2 * x.shape[0], *x.shape[1:])),))
    return (double.get_total_flops() - single.get_total_flops()) // 2, out


def _meta_input(model: nn.Module, input_shape: InputShape) -> torch.Tensor:
    reference = next(model.parameters(), None)
    dtype = torch.get_default_dtype() if reference is None else reference.dtype
    return torch.empty(input_shape, device="meta", dtype=dtype)
