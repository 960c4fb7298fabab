"""Top-channel activation maps, the paper's Fig. 6 (c3exp/analysis/cam.py): the most activated channels, upsampled."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c3exp.analysis import rank_channels, top_channel_maps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rank_channels_is_the_argsort_of_mean_activation():
    features = torch.rand(3, 20, 4, 4, generator=torch.Generator().manual_seed(3))
    means = features.mean(dim=(2, 3)).numpy()
    expected = np.argsort(-means, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(rank_channels(features, 6).numpy(), expected)


def test_top_channel_maps_are_the_most_activated_channels_upsampled(c3_network):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    maps = top_channel_maps(c3_network, images, k=6)
    with torch.no_grad():
        features = c3_network.forward_features(images)
    means = features.mean(dim=(2, 3)).numpy()
    np.testing.assert_array_equal(maps.channels.numpy(), np.argsort(-means, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(maps.scores.numpy(), np.take_along_axis(means, maps.channels.numpy(), axis=1), rtol=1e-6)
    assert maps.maps.shape == (2, 6, 32, 32) and maps.maps.min() >= 0 and maps.maps.max() <= 1
    top = F.interpolate(features[:1, maps.channels[0, :1]], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    expected = (top - top.min()) / (top.max() - top.min())
    torch.testing.assert_close(maps.maps[0, 0], expected)
