"""`python -m c3exp.bench` end to end (c3exp/bench/run.py): raw step times, the machine, ratios (paired by round),
the matmul peak, loop mode, a new file per run."""
from __future__ import annotations

import datetime
import json
import os
import statistics

import pytest
import torch

from c3exp.bench.run import bench, cpu_model, new_report_path, paired_ratios, ratios, summarise


TINY = ["bench.batch_size=2", "bench.steps=2", "bench.warmup=1", "bench.threads=1"]


def test_bench_writes_raw_step_times_machine_and_ratios(tmp_path):
    path = tmp_path / "out" / "bench.json"
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
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
    assert machine["cores"] == os.cpu_count() and machine["torch"] == torch.__version__ and machine["torch_threads"] == 1
    assert machine["cpu"] == cpu_model() and first["settings"]["device"] == "cpu"
    assert started <= datetime.datetime.fromisoformat(report["date"]) <= datetime.datetime.now(datetime.timezone.utc)
    assert machine["matmul_peak"] is None and "fraction_of_peak" not in first  # bench.peak is off by default


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


def test_bench_times_the_graphed_step_beside_the_plain_one(tmp_path, monkeypatch):
    """bench.cuda_graphs=true times TaskModule.graph_step through StepGraphs (plain calls on a CPU), in both loops."""
    from c3exp.training.graphs import StepGraphs

    calls = []
    plain_call = StepGraphs.__call__
    monkeypatch.setattr(StepGraphs, "__call__", lambda graphs, *inputs: calls.append(graphs) or plain_call(graphs, *inputs))
    steps = bench(["model=resnet20", "attn=c3", *TINY, "bench.cuda_graphs=false,true", f"bench.path={tmp_path / 's'}"])
    assert len(calls) == 1 + 2  # the warm-up and two timed steps of the graphed configuration
    assert [row["settings"]["cuda_graphs"] for row in steps["configurations"]] == [False, True]
    calls.clear()
    bench(["model=resnet20", "attn=none", *TINY, "bench.cuda_graphs=true", "bench.mode=loop", "bench.rounds=1",
           f"bench.path={tmp_path / 'l'}"])
    assert len({id(graphs) for graphs in calls}) == 2 and len(calls) == 2 * (1 + 2 + 1)  # Lightning's and the bare loop's


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


def test_paired_ratio_cancels_a_slow_phase_that_hits_whole_rounds():
    # C3 costs 10% in every round; rounds 2 and 3 ran while the machine was twice as slow for the
    # second configuration only in round 2, and for both in round 3.
    reference, candidate = [1.0, 1.0, 2.0], [1.1, 2.2, 2.2]
    paired = paired_ratios(candidate, reference)
    assert paired["ratio_paired"] == pytest.approx(1.1)
    assert ratios(summarise(candidate, 1), summarise(reference, 1))["ratio_median"] == pytest.approx(2.2)
    assert paired["ratio_paired_q1"] == pytest.approx(1.1) and paired["ratio_paired_q3"] == pytest.approx(1.65)
    assert paired_ratios([2.0], [1.0]) == {"ratio_paired": 2.0, "ratio_paired_q1": 2.0, "ratio_paired_q3": 2.0}  # one round


def test_report_names_are_never_reused_within_one_second(tmp_path):
    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    stem = f"20260102-030405-p{os.getpid()}"
    names = [new_report_path(started, tmp_path / "bench").name for _ in range(3)]
    assert names == [f"{stem}.json", f"{stem}-2.json", f"{stem}-3.json"]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted(names)  # claimed at once
