"""The bench's training steps (c3exp/bench/steps.py) for every task: segmentation and detection batches too."""
from __future__ import annotations

from c3exp.bench.run import bench


def test_bench_times_segmentation_steps(tmp_path):
    result = bench(["task=segmentation", "data=shapes", "model=resnet20", "attn=none,c3", "bench.batch_size=2",
                    "bench.warmup=1", "bench.steps=2", f"bench.path={tmp_path / 'bench.json'}"])
    rows = {row["label"]: row for row in result["configurations"]}
    assert set(rows) == {"attn=none", "attn=c3"} and all(len(row["step_times_s"]) == 2 for row in rows.values())
    assert rows["attn=c3"]["params"] > rows["attn=none"]["params"]


def test_bench_times_detection_steps(tmp_path):
    result = bench(["task=detection", "data=shapes_detection", "model=resnet20", "attn=none,c3", "bench.batch_size=2",
                    "bench.warmup=1", "bench.steps=2", "task.net.fpn_channels=16",
                    "task.net.representation_size=32", f"bench.path={tmp_path / 'bench.json'}"])
    rows = {row["label"]: row for row in result["configurations"]}
    assert set(rows) == {"attn=none", "attn=c3"} and all(len(row["step_times_s"]) == 2 for row in rows.values())
    assert rows["attn=c3"]["params"] > rows["attn=none"]["params"]
