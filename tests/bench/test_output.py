"""The bench's report files (c3exp/bench/output.py): a new name for every run."""
from __future__ import annotations

import datetime
import os


def test_report_names_are_never_reused_within_one_second(tmp_path):
    from c3exp.bench.output import new_report_path

    started = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    stem = f"20260102-030405-p{os.getpid()}"
    names = [new_report_path(started, tmp_path / "bench").name for _ in range(3)]
    assert names == [f"{stem}.json", f"{stem}-2.json", f"{stem}-3.json"]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted(names)  # claimed at once
