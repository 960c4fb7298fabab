"""The bench's configurations (c3exp/bench/configs.py): comma-separated overrides, bench.* in a config of its own,
and each bad bench.* value one line naming it."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from c3exp.bench.configs import expand_overrides
from c3exp.cli.bench import main
from c3exp.config import compose
from c3exp.errors import OverrideError
from tests.conftest import assert_names_bad_setting


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


def bench_error(args: list[str], capsys) -> str:
    """The bench's one `error:` line for `args`, after checking it exits with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "args,key,value,specific",
    [
        (["bench.device=tpu"], "bench.device", "tpu", ""),
        (["bench.precision=8-mixed"], "bench.precision", "8-mixed", ""),
        (["bench.precision=16-mixed"], "bench.precision", "16-mixed", "32 or bf16-mixed on a CPU"),
        (["bench.steps=1"], "bench.steps", 1, ""),
        (["bench.peak=maybe"], "bench.peak", "maybe", ""),
        (["attn=none,sk"], "attn", "sk", ""),
        (["bench.threads=1,2"], "bench.threads", [1, 2], "one value for all configurations"),
        (["bench.path="], "bench.path", "", ""),
        (["experiment=detection_shapes", "bench.cuda_graphs=true"], "bench.cuda_graphs", True,
         "false: DetectionModule has no graphed step"),
    ],
)
def test_bad_bench_settings_are_one_line_errors(args, key, value, specific, capsys):
    err = bench_error(args, capsys)
    assert_names_bad_setting(err, key, value)
    assert specific in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench.nope=1"], "bench.nope is not a config key or group (bench.nope=1): did you mean bench.peak"),
        (["bench=foo"], "bench is not a config key or group (bench=foo): did you mean bench."),
        (["model.nope=1", "bench.steps=3"], "model.nope is not a config key or group (model.nope=1): did you mean model.name"),
    ],
)
def test_unknown_bench_keys_are_one_line_errors(args, message, capsys):
    assert message in bench_error(args, capsys)
