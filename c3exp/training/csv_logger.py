"""Lightning's CSVLogger, whose writer deletes or truncates metrics.csv in place, with each save written beside the
file and renamed onto it, so a kill or a full disk never leaves it cut short. Epochs are 0-based, as Lightning's."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from c3exp.training.csv_rows import write_rows
from c3exp.utils.atomic import remove_temps


class ReplacingCSVWriter:
    """The writer CSVLogger drives (log_metrics, log_hparams, save, `metrics`); it keeps every row (a few an epoch)."""

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []  # logged since the last save (CSVLogger counts them)
        self.saved: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}
        os.makedirs(log_dir, exist_ok=True)
        remove_temps(Path(log_dir), self.NAME_METRICS_FILE)  # left by a killed save; this process is the only writer

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        step = len(self.metrics) if step is None else step
        self.metrics.append({**{key: _scalar(value) for key, value in metrics_dict.items()}, "step": step})

    def save(self) -> None:
        if not self.metrics:
            return
        self.saved.extend(self.metrics)
        self.metrics = []
        write_rows(Path(self.metrics_file_path), self.saved)


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, Tensor) else value


class ReplacingCSVLogger(CSVLogger):
    """CSVLogger (same arguments, same files) whose metrics.csv is replaced whole at each save, never truncated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer: ReplacingCSVWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ReplacingCSVWriter:
        if self._writer is None:
            self._writer = ReplacingCSVWriter(self.log_dir)
        return self._writer

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._writer is not None:  # other DDP processes never started one
            self.save()
