"""Channel correlation (Fig. 4) and top-channel activation maps (Fig. 6): numbers, callback, CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import c3exp
from c3exp.analysis import ChannelCorrelation, rank_channels, stage_correlations, stage_outputs, top_channel_maps
from c3exp.analysis.callback import log_image_to_wandb
from c3exp.analysis.correlation import CorrelationAccumulator, channel_correlation, mean_abs_off_diagonal
from c3exp.analyze import main as analyze
from c3exp.errors import ConfigError
from c3exp.train import train
from tests.conftest import TINY_DIGITS, error_line, run_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_RUN = TINY_DIGITS + ["model=resnet20", "callbacks=analysis", "trainer.max_epochs=2", "data.batch_size=8",
                          "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                          "callbacks.channel_correlation.num_images=16"]


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


@pytest.fixture(scope="module")
def c3_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return c3exp.build_model(c3exp.compose(["model=resnet20", "attn=c3", "data=digits"])).eval()


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


# -- trained runs: the callback and the CLI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, dict]:
    """ResNet-20 without and with C3, 2 tiny epochs each, with the correlation callback on."""
    root = tmp_path_factory.mktemp("analysis_runs")
    return {attn: train(run_config(TINY_RUN + [f"attn={attn}"], root / attn)) for attn in ("none", "c3")}


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


def test_callback_rejects_bad_settings():
    with pytest.raises(ConfigError, match="every_n_epochs=0"):
        ChannelCorrelation("out", every_n_epochs=0)


def test_correlation_command_writes_matrices_heatmaps_and_prints_stages(trained_runs, tmp_path, capsys):
    ckpt = trained_runs["c3"]["checkpoints"]["last"]
    correlations = analyze(["correlation", f"ckpt_path={ckpt}", "--batches", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "correlation.json").read_text())
    with np.load(tmp_path / "correlation.npz") as stored:
        for c, stage in zip(correlations, summary["stages"]):
            np.testing.assert_array_equal(stored[f"stage{c.stage}"], c.matrix)
            assert stage["mean_abs_corr"] == pytest.approx(c.mean_abs)
            assert f"stage {c.stage}: mean |corr| = {c.mean_abs:.4f}" in printed
            assert (tmp_path / f"stage{c.stage}.png").stat().st_size > 5_000


def test_correlation_compare_and_cam_commands_draw_their_figures(trained_runs, tmp_path):
    runs = {attn: Path(results["run_dir"]) for attn, results in trained_runs.items()}
    compare = analyze(["correlation-compare", str(runs["none"]), str(runs["c3"]), "--out", str(tmp_path / "fig4.png")])
    ckpts = [trained_runs[attn]["checkpoints"]["last"] for attn in ("none", "c3")]
    cam = analyze(["cam", *ckpts, "--images", "2", "--topk", "3", "--out", str(tmp_path / "fig6.png")])
    for figure in (compare, cam):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cam", "a.ckpt", "b.ckpt", "--topk", "0"], "'0' is not valid: expected an integer >= 1"),
        (["correlation", "ckpt_path=missing.ckpt"], "ckpt_path='missing.ckpt' is not valid"),
        (["correlation", "data.root=/x"], "ckpt_path=None is not valid"),
        (["correlation-compare", ".", "."], "run_dir='.' is not valid"),
        (["colour"], "invalid choice: 'colour'"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(argv, message, capsys):
    assert message in error_line(lambda: analyze(argv), capsys)


def test_cam_topk_beyond_the_channels_is_a_user_error(trained_runs, capsys):
    ckpts = [trained_runs[attn]["checkpoints"]["last"] for attn in ("none", "c3")]
    err = error_line(lambda: analyze(["cam", *ckpts, "--topk", "65", "--images", "1"]), capsys)
    assert "--topk=65 is not valid: expected at most the 64 channels" in err


@pytest.mark.parametrize("split", ["test", "val"])
def test_cam_images_beyond_the_split_is_a_user_error(trained_runs, split, capsys):
    """More images than the split holds used to build a figure of the whole split: 11 minutes, 2.9 GB."""
    ckpts = [trained_runs[attn]["checkpoints"]["last"] for attn in ("none", "c3")]
    err = error_line(lambda: analyze(["cam", *ckpts, "--images", "100000", "--split", split]), capsys)
    available = {"test": 359, "val": 180}[split]
    assert f"--images=100000 is not valid: expected 1..{available} (the {split} images of digits)" in err


def test_module_entry_point_reports_errors_in_one_line():
    done = subprocess.run([sys.executable, "-m", "c3exp.analyze", "cam", "x.ckpt", "y.ckpt"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: ckpt_path='x.ckpt' is not valid: expected an existing checkpoint file"
    ]


def test_correlation_command_reads_a_checkpoint_trained_with_data_on_device(tmp_path, capsys):
    """data.on_device's loader (DeviceBatches) has no `.dataset`: the images used are counted as they are read."""
    overrides = [item for item in TINY_RUN if not item.startswith("callbacks")] + [
        "attn=c3", "data.on_device=true", "trainer.max_epochs=1"]
    ckpt = train(run_config(overrides, tmp_path / "run"))["checkpoints"]["last"]
    for batches, images in (("2", 16), ("1000", 180)):  # 180: the whole digits val split, fewer than 1000 batches of 8
        out = tmp_path / f"out{batches}"
        correlations = analyze(["correlation", f"ckpt_path={ckpt}", "--batches", batches, "--out", str(out)])
        summary = json.loads((out / "correlation.json").read_text())
        assert summary["images"] == images and len(summary["stages"]) == len(correlations) == 3
        assert f"({images} val images)" in capsys.readouterr().out


def test_a_checkpoint_whose_weights_do_not_fit_is_one_line(trained_runs, tmp_path, capsys):
    checkpoint = torch.load(trained_runs["c3"]["checkpoints"]["last"], map_location="cpu", weights_only=False)
    del checkpoint["state_dict"]["net.head.2.weight"]
    damaged = tmp_path / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    err = error_line(lambda: analyze(["correlation", f"ckpt_path={damaged}", "--batches", "1"]), capsys)
    assert "a checkpoint whose weights fit the model of its config" in err and "head.2.weight" in err
