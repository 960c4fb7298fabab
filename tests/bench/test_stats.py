"""The bench's statistics (c3exp/bench/stats.py): ratios of medians and paired per-round ratios."""
from __future__ import annotations

import pytest

from c3exp.bench.stats import paired_ratios, ratios, summarise


def test_paired_ratio_cancels_a_slow_phase_that_hits_whole_rounds():
    # C3 costs 10% in every round; rounds 2 and 3 ran while the machine was twice as slow for the
    # second configuration only in round 2, and for both in round 3.
    reference, candidate = [1.0, 1.0, 2.0], [1.1, 2.2, 2.2]
    paired = paired_ratios(candidate, reference)
    assert paired["ratio_paired"] == pytest.approx(1.1)
    assert ratios(summarise(candidate, 1), summarise(reference, 1))["ratio_median"] == pytest.approx(2.2)
    assert paired["ratio_paired_q1"] == pytest.approx(1.1) and paired["ratio_paired_q3"] == pytest.approx(1.65)
    assert paired_ratios([2.0], [1.0]) == {"ratio_paired": 2.0, "ratio_paired_q1": 2.0, "ratio_paired_q3": 2.0}  # one round
