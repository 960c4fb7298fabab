"""Parameters and per-image MACs as Table 1 reports them (torch's FLOPs halved; thop's BN and ReLU add about 2%)."""
from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from c3exp.utils.modes import evaluating

InputShape = tuple[int, int, int, int]


class PartCost(NamedTuple):
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
    min_size = min_size if min_size is None or isinstance(min_size, int) else max(min_size)
    size = data.get("crop_size") or min_size or data.image_size
    return (1, data.get("channels", 3), size, size)


def model_complexity(net: nn.Module, data: Any) -> dict[str, int]:
    """Parameters and per-image MACs (a detector's: of its backbone and FPN; its heads' work depends on the data)."""
    per_image = net.backbone if isinstance(net, GeneralizedRCNN) else net
    return {"params": count_params(net), "macs": count_macs(per_image, data_input_shape(data))}


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
    """module(x)'s MACs that grow with the batch (C3's per-call merged decoder left out) and its output."""
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
