"""A resumed run's metrics.csv: the rows before the checkpoint are kept, without a warning that they are lost."""
from __future__ import annotations

import csv
import warnings

from lightning.pytorch.loggers import CSVLogger

from c3exp.training.csv_rows import carry_over_csv_rows


def test_resuming_keeps_the_earlier_rows_and_does_not_warn_they_will_be_deleted(tmp_path):
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    (tmp_path / "csv").mkdir()
    rows = [{"epoch": "0", "step": "9", "val/acc1": "0.5"}, {"epoch": "1", "step": "19", "val/acc1": "0.6"},
            {"epoch": "1", "step": "20", "test/acc1": "0.7"}]  # the old run's test row, after its last checkpoint
    with (tmp_path / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", "val/acc1", "test/acc1"])
        writer.writeheader()
        writer.writerows(rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = carry_over_csv_rows(logger, tmp_path / "checkpoints" / "last.ckpt", global_step=20)
    assert kept == 2
    assert not [w for w in caught if "will be deleted" in str(w.message)]
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as f:
        assert [row["val/acc1"] for row in csv.DictReader(f)] == ["0.5", "0.6"]
