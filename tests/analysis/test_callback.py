"""The correlation callback (c3exp/analysis/callback.py): scalars logged, matrices and heatmaps written, W&B images."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from c3exp.analysis import ChannelCorrelation
from c3exp.analysis.callback import log_image_to_wandb
from c3exp.analysis.correlation import mean_abs_off_diagonal
from c3exp.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


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
