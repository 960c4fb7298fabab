"""Channel correlation, the paper's Fig. 4 (c3exp/analysis/correlation.py): against np.corrcoef, over batches,
at every stage output of a real network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from c3exp.analysis import stage_correlations, stage_outputs
from c3exp.analysis.correlation import CorrelationAccumulator, channel_correlation, mean_abs_off_diagonal

pytestmark = pytest.mark.usefixtures("one_thread")


def corrcoef_of(features: torch.Tensor) -> np.ndarray:
    """The reference: np.corrcoef of each channel's values over all (image, position) pairs."""
    array = features.detach().double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(array.transpose(1, 0, 2, 3).reshape(array.shape[1], -1))


def random_features(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 10, 5, 7, generator=generator)
    features[:, 1] = 0.7 * features[:, 0] + 0.3 * features[:, 1]  # correlated pair
    features[:, 2] = 1000.0 + 0.01 * features[:, 2]  # large mean, small spread
    features[:, 3] = 0.0  # a dead channel: no correlation defined
    return features


def test_correlation_matches_np_corrcoef_on_random_features():
    features = random_features()
    ours, reference = channel_correlation(features), corrcoef_of(features)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    np.testing.assert_allclose(ours, reference, atol=1e-10, equal_nan=True)
    assert ours[0, 1] > 0.8


def test_correlation_over_batches_equals_one_pass_over_all_images():
    features = random_features(seed=1)
    accumulator = CorrelationAccumulator()
    for chunk in features.split(2):
        accumulator.update(chunk)
    np.testing.assert_allclose(accumulator.compute(), corrcoef_of(features), atol=1e-10, equal_nan=True)


def test_mean_abs_off_diagonal_skips_the_diagonal_and_dead_channels():
    matrix = np.array([[1.0, -0.5, np.nan], [-0.5, 1.0, np.nan], [np.nan, np.nan, np.nan]])
    assert mean_abs_off_diagonal(matrix) == pytest.approx(0.5)
    features = random_features()
    reference = corrcoef_of(features)
    off = reference[~np.eye(10, dtype=bool)]
    assert mean_abs_off_diagonal(channel_correlation(features)) == pytest.approx(np.nanmean(np.abs(off)))


def test_stage_correlations_match_np_corrcoef_of_real_stage_outputs(c3_network):
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = stage_outputs(c3_network, images)
    correlations = stage_correlations(c3_network, [images[:5], images[5:]])
    assert [c.stage for c in correlations] == [1, 2, 3]
    assert [len(c.matrix) for c in correlations] == [16, 32, 64]
    for correlation, output in zip(correlations, outputs):
        np.testing.assert_allclose(correlation.matrix, corrcoef_of(output), atol=1e-8, equal_nan=True)
    assert not c3_network.training
    torch.testing.assert_close(outputs[-1], c3_network.forward_features(images))


def test_stage_outputs_names_what_it_cannot_read():
    with pytest.raises(TypeError, match="Linear is not a c3exp network"):
        stage_outputs(torch.nn.Linear(2, 2), torch.randn(1, 2))
