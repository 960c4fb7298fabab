"""Fast C3 against the naive equations (compiled, channels_last, bf16) and `python -m c3exp.bench` end to end."""
from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.overrides import TorchFunctionMode

import c3exp
from c3exp.attention import C3Block
from c3exp.bench import bench, expand_overrides, main, paired_ratios, ratios, summarise
from c3exp.config import compose
from c3exp.errors import OverrideError
from tests.test_attention import C3_CASES, NaiveC3, make_c3

# the resize paths C3's fast code special-cases: integer down/up factors, one tile, arbitrary sizes
FAST_PATHS = ["block size", "resize", "resize up", "resize odd", "tile", "groups + tile"]


def case_input(case: str, seed: int = 1) -> tuple[C3Block, torch.Tensor]:
    spec = dict(C3_CASES[case])
    channels, shape, size = spec.pop("channels"), spec.pop("shape"), spec.pop("size")
    x = torch.randn(2, channels, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return make_c3(channels, size, **spec), x


def outputs_and_input_grads(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().requires_grad_()
    out = block(x)
    out.square().sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("case", FAST_PATHS)
def test_compiled_c3_matches_naive_equations(case: str):
    block, x = case_input(case)
    with torch.no_grad():
        expected = NaiveC3(block)(x)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # fullgraph: no graph breaks
    actual, grad = outputs_and_input_grads(compiled, x)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, outputs_and_input_grads(block, x)[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", FAST_PATHS)
def test_channels_last_c3_matches_naive_equations(case: str):
    block, x = case_input(case, seed=2)
    with torch.no_grad():
        expected = NaiveC3(block)(x)
    actual, grad = outputs_and_input_grads(block, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad, outputs_and_input_grads(block, x)[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["resize", "resize odd"])
def test_c3_input_gradient_matches_naive_equations(case: str):
    """The subsample/upsample autograd functions: the input's gradient, through both of its paths."""
    block, x = case_input(case, seed=3)
    naive_grad = outputs_and_input_grads(NaiveC3(block), x)[1]
    torch.testing.assert_close(outputs_and_input_grads(block, x)[1], naive_grad, rtol=1e-8, atol=1e-9)


class DtypeSpy(TorchFunctionMode):
    """The dtypes softmax and the affinity's square see."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, list[torch.dtype]] = {"softmax": [], "square": []}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.seen:
            self.seen[name].append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def test_bf16_autocast_network_close_to_float32_with_float32_affinity():
    torch.manual_seed(0)
    net = c3exp.build_model(c3exp.compose(["model=resnet20", "attn=c3", "data=cifar10"])).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16), DtypeSpy() as spy:
            low = net(x)
    assert spy.seen["softmax"] == [torch.float32] * 3 and set(spy.seen["square"]) == {torch.float32}
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_bf16_autocast_training_step_gradients_close_to_float32():
    block = C3Block(16, (4, 4), reduction=4).train()
    x = torch.randn(4, 16, 8, 8)
    grads = []
    for enabled in (False, True):
        block.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = block(x)
        assert out.dtype == torch.float32  # the residual keeps the input's precision
        out.square().sum().backward()
        grads.append(block.encoder[0].weight.grad.clone())
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=0.1, atol=0.1 * grads[0].abs().max().item())


# ----------------------------------------------------------------------------------------------
# The benchmark command


TINY = ["bench.batch_size=2", "bench.steps=2", "bench.warmup=1", "bench.threads=1"]


def test_comma_separated_overrides_define_the_configurations():
    assert expand_overrides(["model=resnet20,resnet110", "attn=none,c3", "seed=1"]) == [
        ["model=resnet20", "attn=none", "seed=1"],
        ["model=resnet20", "attn=c3", "seed=1"],
        ["model=resnet110", "attn=none", "seed=1"],
        ["model=resnet110", "attn=c3", "seed=1"],
    ]
    sizes = "attn.options.spatial_sizes=[[8,8],[8,8],[4,4]]"
    assert expand_overrides([sizes]) == [[sizes]]  # commas inside brackets are one value


def test_bench_writes_raw_step_times_machine_and_ratios(tmp_path):
    path = tmp_path / "out" / "bench.json"
    report = bench(["model=resnet20", "attn=none,c3", *TINY, f"bench.path={path}"])
    assert json.loads(path.read_text()) == report
    first, second = report["configurations"]
    assert [first["label"], second["label"]] == ["attn=none", "attn=c3"]
    for row in (first, second):
        assert len(row["step_times_s"]) == 2 and all(t > 0 for t in row["step_times_s"])
        assert row["min_s"] <= row["q1_s"] <= row["median_s"] <= row["q3_s"] <= row["max_s"]
        assert row["images_per_s"] == pytest.approx(2 / row["median_s"])
    assert first["ratio_median"] == first["ratio_min"] == 1.0
    assert second["ratio_median"] == pytest.approx(second["median_s"] / first["median_s"])
    per_round = sorted(t / r for t, r in zip(second["step_times_s"], first["step_times_s"]))
    assert second["ratio_paired"] == pytest.approx(sum(per_round) / 2)  # two rounds: their mean is the median
    assert second["ratio_paired_q1"] <= second["ratio_paired"] <= second["ratio_paired_q3"]
    assert first["ratio_paired"] == first["ratio_paired_q1"] == first["ratio_paired_q3"] == 1.0
    assert second["params"] - first["params"] == 70032 and second["macs"] > first["macs"]
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert machine["cpu"] and report["date"][:2] == "20" and first["settings"]["device"] == "cpu"
    assert machine["matmul_peak"] is None and "fraction_of_peak" not in first  # bench.peak is off by default


def test_paired_ratio_cancels_a_slow_phase_that_hits_whole_rounds():
    # C3 costs 10% in every round; rounds 2 and 3 ran while the machine was twice as slow for the
    # second configuration only in round 2, and for both in round 3.
    reference, candidate = [1.0, 1.0, 2.0], [1.1, 2.2, 2.2]
    paired = paired_ratios(candidate, reference)
    assert paired["ratio_paired"] == pytest.approx(1.1)
    assert ratios(summarise(candidate, 1), summarise(reference, 1))["ratio_median"] == pytest.approx(2.2)
    assert paired["ratio_paired_q1"] == pytest.approx(1.1) and paired["ratio_paired_q3"] == pytest.approx(1.65)
    assert paired_ratios([2.0], [1.0]) == {"ratio_paired": 2.0, "ratio_paired_q1": 2.0, "ratio_paired_q3": 2.0}  # one round


def test_bench_peak_gives_achieved_flops_and_their_share_of_the_matmul_peak(tmp_path, capsys):
    report = bench(["model=resnet20", "attn=none", *TINY, "bench.peak=true", f"bench.path={tmp_path / 'b.json'}"])
    peak = report["machine"]["matmul_peak"]
    assert peak["dtype"] == "float32" and peak["size"] == 1024 and peak["tflops"] > 0
    (row,) = report["configurations"]
    assert row["train_tflops"] == pytest.approx(6 * row["macs"] * row["images_per_s_best"] / 1e12)
    assert row["fraction_of_peak"] == pytest.approx(row["train_tflops"] / peak["tflops"])
    assert row["epoch_50k_s_derived"] == pytest.approx(50_000 / row["images_per_s_best"])
    assert "of the measured peak" in capsys.readouterr().out


def test_bench_loop_mode_compares_lightning_with_a_bare_loop(tmp_path):
    path = tmp_path / "bench.json"
    report = bench(["model=resnet20", "attn=c3", *TINY, "bench.mode=loop", "bench.rounds=2", f"bench.path={path}"])
    (row,) = report["configurations"]
    assert len(row["lightning"]["step_times_s"]) == len(row["bare"]["step_times_s"]) == 4  # 2 rounds x 2 steps
    assert row["ratio_median"] == pytest.approx(row["lightning"]["median_s"] / row["bare"]["median_s"])
    rounds, steps = row["settings"]["rounds"], row["settings"]["steps"]
    per_round = sorted(
        statistics.median(row["lightning"]["step_times_s"][i * steps : (i + 1) * steps])
        / statistics.median(row["bare"]["step_times_s"][i * steps : (i + 1) * steps])
        for i in range(rounds)
    )
    assert row["ratio_paired"] == pytest.approx(statistics.median(per_round))


@pytest.mark.parametrize(
    "args,message",
    [
        (["bench.device=tpu"], "bench.device='tpu' is not valid"),
        (["bench.precision=8-mixed"], "bench.precision='8-mixed' is not valid"),
        (["bench.precision=16-mixed"], "bench.precision='16-mixed' is not valid: expected 32 or bf16-mixed on a CPU"),
        (["bench.steps=1"], "bench.steps=1 is not valid"),
        (["bench.peak=maybe"], "bench.peak='maybe' is not valid: expected true or false"),
        (["attn=none,sk"], "attn='sk' is not valid"),
        (["bench.threads=1,2"], "bench.threads=[1, 2] is not valid: expected one value for all configurations"),
        (["bench.nope=1"], "bench.nope is not a config key or group (bench.nope=1): did you mean bench.peak"),
        (["bench=foo"], "bench is not a config key or group (bench=foo): did you mean bench."),
        (["model.nope=1", "bench.steps=3"], "model.nope is not a config key or group (model.nope=1): did you mean model.name"),
        (["bench.path="], "bench.path='' is not valid"),
    ],
)
def test_bad_bench_settings_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_training_configs_carry_no_bench_settings():
    """bench.* lives in the bench's own primary config: not in training configs, checkpoints or W&B configs."""
    assert "bench" not in compose([]) and "bench" not in compose(["experiment=detection_shapes"])
    with pytest.raises(OverrideError, match="bench.steps is not a config key"):
        compose(["bench.steps=3"])  # a training command line has no bench settings to set
    from c3exp.bench import compose_bench

    timed_cfg = compose_bench(["model=resnet110", "attn=c3", "bench.steps=15"])
    assert timed_cfg.bench.steps == 15 and timed_cfg.bench.mode == "steps" and timed_cfg.bench.path is None
    training_part = OmegaConf.masked_copy(timed_cfg, [key for key in timed_cfg if key != "bench"])
    assert training_part == compose(["model=resnet110", "attn=c3"])  # the bench times the training config itself


def test_two_bench_runs_write_two_files(tmp_path, monkeypatch, capsys):
    """Without bench.path every run writes a file of its own: a second run leaves the first one's intact."""
    monkeypatch.chdir(tmp_path)
    reports = [bench(["model=resnet20", "attn=none", *TINY]) for _ in range(2)]
    files = sorted((tmp_path / "outputs" / "bench").glob("*.json"))
    assert len(files) == 2 and all(f"-p{os.getpid()}" in f.name for f in files)
    written = [json.loads(f.read_text()) for f in files]
    assert all(report in written for report in reports)
    wrote = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert sorted(tmp_path / path for path in wrote) == files  # each run prints where it wrote


def test_report_names_are_never_reused_within_one_second(tmp_path):
    from c3exp.bench import new_report_path

    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    stem = f"20260102-030405-p{os.getpid()}"
    names = [new_report_path(started, tmp_path / "bench").name for _ in range(3)]
    assert names == [f"{stem}.json", f"{stem}-2.json", f"{stem}-3.json"]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted(names)  # claimed at once


def test_python_m_c3exp_bench_reports_a_bad_setting_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "c3exp.bench", "bench.mode=fast"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and result.stderr == "error: bench.mode='fast' is not valid: expected one of steps, loop\n"
    assert result.stdout == "" and not (tmp_path / "outputs").exists()


def test_c3_breakdown_takes_the_block_apart_and_runs():
    """benchmarks/c3_breakdown.py (BENCHMARKS.md's cost breakdown): each variant is the part it names."""
    from benchmarks.c3_breakdown import VARIANTS, in_step_table, message_table, network, step_table

    def first_c3(variant: str) -> C3Block:
        return next(m for m in network("resnet20", variant).modules() if isinstance(m, C3Block))

    x = torch.randn(2, 16, 32, 32)
    torch.testing.assert_close(first_c3("relu")(x), x.relu())
    upsampled = x[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(first_c3("resize")(x), (x + upsampled).relu())
    assert not torch.allclose(first_c3("c3")(x), x.relu())
    lines = step_table("resnet20", steps=2, batch_size=4)
    assert [line.split()[0] for line in lines[1:]] == [*VARIANTS, "messages"]
    assert [line.split()[1] for line in message_table("resnet20", batch_size=4, repeats=1)[1:]] == [
        "4x16x16x16", "4x16x16x16", "4x32x8x8"
    ]
    in_step = in_step_table("resnet20", steps=2, batch_size=4)
    assert [line.split()[0] for line in in_step[1:4]] == ["1", "2", "3"] and in_step[4].startswith("all C3 blocks")
    assert all(float(value) > 0 for line in in_step[1:4] for value in line.split()[1:])


def test_block_clock_times_a_blocks_forward_and_backward_inside_a_step():
    """The backward interval opens when the output's gradient is complete and closes with the input's."""
    from benchmarks.c3_breakdown import BlockClock

    class Sleepy(torch.autograd.Function):
        @staticmethod
        def forward(x):
            time.sleep(0.02)
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            time.sleep(0.1)
            return grad * 2

    class Block(torch.nn.Module):
        def forward(self, x):
            return Sleepy.apply(x)

    block = Block()
    clock = BlockClock([block])
    x = torch.randn(3, requires_grad=True)
    (block(x * 1.0) * 3).sum().backward()
    assert 0.02 <= clock.seconds("forward", 0) < 0.1 <= clock.seconds("backward", 0) < 1.0
