"""Parameter and per-image MAC counts as Table 1 reports them (torch's FLOP counter halved; the paper's thop also
counts BN and ReLU, about 2% more), and shape-only forwards on meta tensors."""
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
    name: str
    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    """Parameters only, not buffers such as BN running statistics."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: InputShape = (1, 3, 32, 32)) -> int:
    with evaluating(model):
        return _macs_of(model, meta_input(model, input_shape))[0]


def data_input_shape(data: Any) -> InputShape:
    """One training image, what counts are per: data.crop_size, else data.min_size (largest), else data.image_size."""
    min_size = data.get("min_size")
    if min_size is not None and not isinstance(min_size, int):
        min_size = max(min_size)
    size = data.get("crop_size") or min_size or data.image_size
    return (1, data.get("channels", 3), size, size)


def per_image_network(net: nn.Module) -> nn.Module:
    """The part of `net` whose work is per image: a detector's backbone and FPN (its heads' depends on the data)."""
    return net.backbone if isinstance(net, GeneralizedRCNN) else net


def model_complexity(net: nn.Module, data: Any) -> dict[str, int]:
    """Parameters and per-image MACs of `net` (a detector: of its backbone and FPN) on a data config's images."""
    return {"params": count_params(net), "macs": count_macs(per_image_network(net), data_input_shape(data))}


def part_costs(model: nn.Module, input_shape: InputShape = (1, 3, 32, 32)) -> list[PartCost]:
    """Costs of stem, stage1..N and head, run in turn as `forward` does: the MACs add up to count_macs."""
    parts = [("stem", model.stem), *((f"stage{i + 1}", s) for i, s in enumerate(model.stages)), ("head", model.head)]
    costs = []
    with evaluating(model):
        x = meta_input(model, input_shape)
        for name, part in parts:
            macs, x = _macs_of(part, x)
            costs.append(PartCost(name, count_params(part), macs))
    return costs


def _macs_of(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs of module(x) that grow with the batch (per-call work on weights, C3's merged decoder, left out), and its
    output, on meta tensors."""
    with FlopCounterMode(display=False) as single:
        out = meta_call(module, x)
    with FlopCounterMode(display=False) as double:
        meta_call(module, x.new_empty((2 * x.shape[0], *x.shape[1:])))
    return (double.get_total_flops() - single.get_total_flops()) // 2, out


def meta_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    reference = next(model.parameters(), None)
    dtype = torch.get_default_dtype() if reference is None else reference.dtype
    return torch.empty(input_shape, device="meta", dtype=dtype)


def meta_call(module: nn.Module, x: torch.Tensor) -> Any:
    """module(x) on meta stand-ins of its weights: only shapes propagate, nothing computed, allocated or drawn."""

    stand_ins = {name: torch.empty_like(tensor, device="meta")
                 for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers())}
    return functional_call(module, stand_ins, (x,))
