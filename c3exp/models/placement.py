"""Where attention modules go in a network, read from the `attn` config group."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from c3exp.attention import Size, block_factory, block_of, create_attn
from c3exp.errors import ConfigError, check, is_int
from c3exp.schema import SpatialSize, conforms
from c3exp.utils.complexity import data_input_shape, meta_call, meta_input
from c3exp.utils.modes import evaluating

PLACEMENTS = ("every_block", "first_block", "every_other_block", "stage_input")
ATTN_KEYS = ("_target_", "name", "placement", "stages", "options", "at")  # at: attention_at's module paths
INPUT_SIZE_KEYS = ("crop_size", "min_size", "image_size")  # where data_input_shape reads the input size, in its order
MAX_BLOCK_SIDE = 16  # A <= 256 positions, the official CIFAR blocks' size: about 34K parameters per C3 block (r 8)

Shape = tuple[int, int, int]  # a feature map's channels, height, width


@dataclass(frozen=True)
class AttentionPlan:
    """The attn config read for a network; stage_input is C3's official code (S + 1: after the last stage)."""

    block: str | None = None
    placement: str = "every_block"
    options: Mapping[str, Any] = field(default_factory=dict)
    spatial_sizes: tuple[Size, ...] = ()
    stages: frozenset[int] | None = None
    user_sizes: bool = False

    def in_block(self, stage: int, block: int, channels: int, spatial_size: Size | None = None) -> nn.Module | None:
        """After the block's last BN, before the add; every_other_block is the non-local paper's."""
        wanted = {"every_block": True, "first_block": block == 0, "every_other_block": block % 2 == 0}
        selected = wanted.get(self.placement) and self._selects(stage)
        return self._create(stage, channels, spatial_size) if selected else None

    def at_stage_input(self, stage: int, channels: int, spatial_size: Size | None = None) -> nn.Module | None:
        wanted = self.placement == "stage_input" and self._selects(stage)
        return self._create(stage, channels, spatial_size) if wanted else None

    def after_last_stage(self, num_stages: int, channels: int, spatial_size: Size | None = None) -> nn.Module | None:
        """The module after the last stage (location S + 1, only when attn.stages names it), or None."""
        wanted = self.placement == "stage_input" and self.stages is not None and num_stages in self.stages
        return self._create(num_stages, channels, spatial_size) if wanted else None

    def _selects(self, stage: int) -> bool:
        return self.stages is None or stage in self.stages

    def _create(self, stage: int, channels: int, spatial_size: Size | None) -> nn.Module | None:
        if self.user_sizes or spatial_size is None:
            spatial_size = self.spatial_sizes[min(stage, len(self.spatial_sizes) - 1)] if self.spatial_sizes else None
        return create_attn(self.block, channels, spatial_size, **self.options)


def placement_plan(attn: Mapping[str, Any] | None, default_spatial_sizes: Sequence[Size] | None,
                   num_stages: int | None = None) -> AttentionPlan:
    """The validated attn group; where attn.at names the modules, a plan that places nothing (stages: none)."""
    attn = dict(attn or {})
    for key in attn:
        check(key in ATTN_KEYS, f"attn.{key}", attn[key], f"a key of the attn group: {', '.join(ATTN_KEYS)}")
    block = block_of(attn)
    block_factory(block)  # a block that cannot be built is named here, before any network is
    placement = attn.get("placement", "every_block")
    check(placement in PLACEMENTS, "attn.placement", placement, PLACEMENTS)
    options = dict(attn.get("options") or {})
    sizes = options.pop("spatial_sizes", None)
    if attn.get("at") is not None:
        return AttentionPlan(block, placement, options, stages=frozenset())
    num_stages = len(default_spatial_sizes or ()) if num_stages is None else num_stages
    stages = _stage_indices(attn.get("stages"), num_stages, placement == "stage_input")
    counts = sorted({num_stages, num_stages + (stages is not None and num_stages in stages)})  # S + 1: one more
    default = tuple(default_spatial_sizes or ())
    valid = conforms(sizes, list[SpatialSize]) and len(sizes) in counts
    shown = f" (default {[list(s) for s in default]})" if default else ""
    allowed = f"null or a list of {' or '.join(map(str, counts))} [H, W] pairs, one per stage{shown}"
    check(sizes is None or valid, "attn.options.spatial_sizes", sizes, allowed)
    spatial_sizes = default if sizes is None else tuple(tuple(size) for size in sizes)
    return AttentionPlan(block, placement, options, spatial_sizes, stages, sizes is not None)


def _stage_indices(stages: Any, num_stages: int, after_last: bool) -> frozenset[int] | None:
    """attn.stages (1-based; negative from the end; S + 1 = after the last stage for stage_input) as 0-based indices."""
    if stages is None:
        return None
    highest = num_stages + after_last
    allowed = (f"null (every stage) or a list of distinct stage numbers 1..{num_stages}, negative counting from "
               f"the end (-1 = the last stage)" + (f", {highest} = after the last stage" if after_last else ""))
    listed = isinstance(stages, (list, tuple)) and len(stages) > 0
    valid = listed and all(is_int(s) and (1 <= s <= highest or -num_stages <= s <= -1) for s in stages)
    indices = [s - 1 if s > 0 else num_stages + s for s in stages] if valid else []
    check(valid and len(set(indices)) == len(indices), "attn.stages", stages, allowed)
    return frozenset(indices)


def check_blocks_fit_maps(net: nn.Module, data: Any, spatial_sizes: Sequence[Sequence[int]] | None) -> None:
    """No map-sized block (C3) larger than its map: it would only upsample it, for up to (block/map)^4 the weights."""
    blocks = {block: stage for stage, modules in enumerate(getattr(net, "stages", ())) for block in modules.modules()
              if getattr(block, "is_attention", False) and hasattr(block, "spatial_size")}
    key = next((key for key in INPUT_SIZE_KEYS if data.get(key)), None)
    if not blocks or key is None:
        return
    input_shape = data_input_shape(data)
    inputs = FeatureMaps.measure(net, input_shape[-1], input_shape[1], stand_ins=blocks).inputs
    maps = {block: inputs[block][1:] for block in blocks if block in inputs}  # a stacked block's inner ones never run
    if all(side <= map_side for block, size in maps.items() for side, map_side in zip(block.spatial_size, size)):
        return
    stage_maps: dict[int, Size] = {}
    for block, size in maps.items():
        stage_maps[blocks[block]] = tuple(map(min, stage_maps.get(blocks[block], size), size))
    maps_text = ", ".join(f"stage {stage + 1} {h}x{w}" for stage, (h, w) in sorted(stage_maps.items()))
    allowed = (f"blocks no larger than the feature maps they run on, in height and in width, at {input_shape[-1]} px "
               f"inputs (data.{key}): {maps_text}")
    if spatial_sizes is None:
        defaults = {stage: block.spatial_size for block, stage in blocks.items()}
        spatial_sizes = [list(size) for _, size in sorted(defaults.items())]
        allowed += (" (these are the model's default blocks, as attn.options.spatial_sizes is null: "
                    "set one [H, W] per stage)")
    raise ConfigError("attn.options.spatial_sizes", spatial_sizes, allowed)


def block_side(map_side: int) -> int:
    """The largest power of two below the map side, at most 16: CIFAR's official blocks; 56 x 56 would be 9.8M each."""
    return 1 if map_side <= 1 else min(MAX_BLOCK_SIDE, 1 << ((map_side - 1).bit_length() - 1))


def block_size(map_shape: Sequence[int]) -> Size:
    return block_side(map_shape[-2]), block_side(map_shape[-1])


@dataclass(frozen=True)
class FeatureMaps:
    """The smallest (C, H, W) map each module receives and returns, measured shape-only (nothing drawn or allocated)."""

    names: Mapping[str, nn.Module]
    inputs: Mapping[nn.Module, Shape]
    outputs: Mapping[nn.Module, Shape]
    calls: Mapping[nn.Module, int]

    @classmethod
    def measure(cls, net: nn.Module, input_size: int, channels: int = 3,
                stand_ins: Collection[nn.Module] = ()) -> FeatureMaps:
        """One eval forward, `stand_ins` (blocks that may not fit their maps) replaced by identities."""
        inputs: dict[nn.Module, Shape] = {}
        outputs: dict[nn.Module, Shape] = {}
        calls: dict[nn.Module, int] = {}

        def record(maps: dict[nn.Module, Shape], module: nn.Module, value: Any) -> None:
            if isinstance(value, torch.Tensor) and value.ndim == 4:
                maps[module] = tuple(map(min, maps.get(module, value.shape[1:]), value.shape[1:]))

        def after(module: nn.Module, args: tuple, output: Any) -> None:  # args[0]: its input, shaped as it came in
            calls[module] = calls.get(module, 0) + 1
            record(inputs, module, args[0] if args else None)
            record(outputs, module, output)

        names = dict(net.named_modules())
        hooks = [module.register_forward_hook(after) for module in names.values()]
        for block in stand_ins:
            block.forward = nn.Identity().forward  # an instance attribute: __call__ finds it before the class's
        try:
            with evaluating(net):
                meta_call(net, meta_input(net, (1, channels, input_size, input_size)))
        finally:
            for hook in hooks:
                hook.remove()
            for block in stand_ins:
                del block.forward
        return cls(names, inputs, outputs, calls)


def attention_at(model: nn.Module, attn: Mapping[str, Any] | None, maps: FeatureMaps) -> None:
    """attn.at: attention after each named module (run once, returning a map), held as Sequential(module, attention)."""
    paths = (attn or {}).get("at")
    if paths is None:
        return
    kept = set(model.modules())
    valid = [name for name, module in maps.names.items()
             if name and module in kept and maps.calls.get(module) == 1 and module in maps.outputs]
    examples = ", ".join(valid[:: max(1, len(valid) // 4)][:4])
    listed = isinstance(paths, (list, tuple)) and len(paths) > 0 and all(isinstance(path, str) for path in paths)
    check(listed and len(set(paths)) == len(paths), "attn.at", paths,
          f"null or a list of distinct module paths such as [{examples}]")
    for path in paths:
        allowed = f"the path of a module that runs once and returns a feature map, such as {examples}"
        check(path in valid, "attn.at", path, allowed)
    sizes = (attn.get("options") or {}).get("spatial_sizes")
    per_path = conforms(sizes, list[SpatialSize]) and len(sizes) == len(paths)
    allowed = f"null (each block sized by its map) or one [H, W] per path of attn.at ({len(paths)})"
    check(sizes is None or per_path, "attn.options.spatial_sizes", sizes, allowed)
    plan = placement_plan(attn, None, num_stages=0)
    blocks = {}
    for index, path in enumerate(paths):
        module = maps.names[path]
        size = tuple(sizes[index]) if sizes is not None else block_size(maps.outputs[module])
        blocks[module] = create_attn(plan.block, maps.outputs[module][0], size, **plan.options)  # None: attn none
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if blocks.get(child) is not None:
                setattr(parent, name, nn.Sequential(child, blocks[child]))
