"""Report a sweep job's primary metric to its Optuna trial after every validation, and stop it when pruned."""
from __future__ import annotations

import math

import lightning as L

from c3exp.training.tuning import current_trial


class ReportToTrial(L.Callback):
    """Each epoch's value of the task's primary metric goes to the trial as the intermediate value of that
    epoch (1-based, as the log numbers epochs); the study's pruner may then stop the trial.

    Outside a trial of c3exp's Optuna sweeper it does nothing. A trial that resumes a dead trial's run
    folder reports the epochs of the checkpoint's history too, so the pruner sees the whole curve.
    """

    def __init__(self) -> None:
        self.trial = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        found = current_trial() if trainer.is_global_zero else None
        self.trial = found[1] if found else None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        import optuna

        metric = pl_module.primary_metric.name
        reported = self.trial.study.get_trials(deepcopy=False)[self.trial.number].intermediate_values
        for row in pl_module.history:
            step = int(row["epoch"]) + 1
            if metric in row and step not in reported and math.isfinite(row[metric]):
                self.trial.report(row[metric], step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {trainer.current_epoch + 1}")
