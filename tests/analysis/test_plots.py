"""The figures' drawing helpers (c3exp/analysis/plots.py): a curve's spread band within its limits."""
from __future__ import annotations

import numpy as np

from c3exp.analysis.plots import Band


def test_the_std_band_stays_within_0_and_100_percent():
    band = Band(x=np.array([1, 2]), mean=np.array([30.0, 95.0]), std=np.array([40.0, 10.0]), runs=2)
    low, high = band.limits(0.0, 100.0)
    np.testing.assert_array_equal(low, [0.0, 85.0])
    np.testing.assert_array_equal(high, [70.0, 100.0])
