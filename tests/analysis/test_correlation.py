"""Channel correlation, the paper's Fig. 4 (c3exp/analysis/correlation.py): against np.corrcoef, over batches,
at every stage output of a real network; and its callback: scalars logged, matrices and heatmaps written, W&B images."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from c3exp.analysis import ChannelCorrelation, stage_correlations, stage_outputs
from c3exp.analysis.correlation import (CorrelationAccumulator, channel_correlation, log_image_to_wandb,
                                        mean_abs_off_diagonal)
from c3exp.errors import ConfigError
from c3exp.paths import config_dir
from c3exp.saved_config import rebuild_config
from c3exp.training.train import instantiate_group
from tests.conftest import run_config

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


def test_callback_logs_scalars_and_writes_matrices_and_heatmaps(trained_runs):
    run_dir = Path(trained_runs["c3"]["run_dir"])
    rows = [row for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if row.get("analysis/corr_stage1")]
    assert len(rows) == 2
    records = json.loads((run_dir / "analysis" / "correlation.json").read_text())
    assert [r["epoch"] for r in records] == [0, 1] and all(r["images"] == 16 for r in records)
    for row, record in zip(rows, records):
        logged = [float(row[f"analysis/corr_stage{i}"]) for i in (1, 2, 3)]
        assert logged == pytest.approx(record["mean_abs_corr"], rel=1e-6)
        with np.load(run_dir / "analysis" / f"corr_epoch{record['epoch']:03d}.npz") as stored:
            assert [stored[f"stage{i}"].shape for i in (1, 2, 3)] == [(16, 16), (32, 32), (64, 64)]
            assert mean_abs_off_diagonal(stored["stage3"]) == pytest.approx(record["mean_abs_corr"][2])
        png = run_dir / "analysis" / f"corr_epoch{record['epoch']:03d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_callback_sends_heatmaps_to_a_wandb_logger(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    class RecordingWandb(WandbLogger):
        def __init__(self):  # no W&B run: only the call is checked
            self.calls = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append((key, images, step))

    logger = RecordingWandb()
    log_image_to_wandb(SimpleNamespace(loggers=[logger], global_step=7), tmp_path / "x.png")
    assert logger.calls == [("analysis/channel_correlation", [str(tmp_path / "x.png")], 7)]


def test_callback_rejects_bad_settings(tmp_path):
    """Checked against its signature where the trainer builds it from conf/callbacks/analysis.yaml."""
    cfg = run_config(["callbacks=analysis", "callbacks.channel_correlation.every_n_epochs=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"callbacks\.channel_correlation\.every_n_epochs=0 is not valid"):
        instantiate_group(cfg.callbacks, "callbacks")


def test_an_older_checkpoint_gets_the_settings_its_config_lacks_from_analysis_yaml():
    """The signature has no defaults: a checkpoint stored before a key existed rebuilds with the YAML's value now."""
    stored = {"choices": {"callbacks": "analysis"},
              "config": {"callbacks": {"channel_correlation": {"out_dir": "old"}}}}
    recorder = instantiate(rebuild_config({"c3exp": stored}, "old.ckpt").callbacks.channel_correlation)
    yaml = OmegaConf.load(config_dir() / "callbacks" / "analysis.yaml").channel_correlation
    assert isinstance(recorder, ChannelCorrelation)
    assert recorder.out_dir == Path("old.ckpt").resolve().parents[1] / "analysis"  # never the checkpoint's
    assert (recorder.every_n_epochs, recorder.num_images, recorder.heatmaps) == (
        yaml.every_n_epochs, yaml.num_images, yaml.heatmaps)
