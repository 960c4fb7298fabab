"""The bench's configurations (c3exp/bench/configs.py): comma-separated overrides, and bench.* in a config of its own."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from c3exp.bench.configs import expand_overrides
from c3exp.config import compose
from c3exp.errors import OverrideError


def test_comma_separated_overrides_define_the_configurations():
    assert expand_overrides(["model=resnet20,resnet110", "attn=none,c3", "seed=1"]) == [
        ["model=resnet20", "attn=none", "seed=1"],
        ["model=resnet20", "attn=c3", "seed=1"],
        ["model=resnet110", "attn=none", "seed=1"],
        ["model=resnet110", "attn=c3", "seed=1"],
    ]
    sizes = "attn.options.spatial_sizes=[[8,8],[8,8],[4,4]]"
    assert expand_overrides([sizes]) == [[sizes]]  # commas inside brackets are one value


def test_training_configs_carry_no_bench_settings():
    """bench.* lives in the bench's own primary config: not in training configs, checkpoints or W&B configs."""
    assert "bench" not in compose([]) and "bench" not in compose(["experiment=detection_shapes"])
    with pytest.raises(OverrideError, match="bench.steps is not a config key"):
        compose(["bench.steps=3"])  # a training command line has no bench settings to set
    from c3exp.bench.configs import compose_bench

    timed_cfg = compose_bench(["model=resnet110", "attn=c3", "bench.steps=15"])
    assert timed_cfg.bench.steps == 15 and timed_cfg.bench.mode == "steps" and timed_cfg.bench.path is None
    training_part = OmegaConf.masked_copy(timed_cfg, [key for key in timed_cfg if key != "bench"])
    assert training_part == compose(["model=resnet110", "attn=c3"])  # the bench times the training config itself
