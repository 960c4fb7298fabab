"""Report a sweep job's primary metric to its Optuna trial after every validation, and stop it when pruned."""
from __future__ import annotations

import math

import lightning as L

from c3exp.training.tuning import current_trial


class ReportToTrial(L.Callback):
    """Each epoch's primary metric to the trial at step = epoch (a resumed run's too), for the pruner to stop it."""

    def __init__(self) -> None:
        self.trial, self.active = None, False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 talks to the study; every DDP rank learns whether there is a trial, to stop with it."""
        found = current_trial() if trainer.is_global_zero else None
        self.trial = found[1] if found else None
        self.active = bool(trainer.strategy.broadcast(self.trial is not None, src=0))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pruned = self.report(pl_module) if self.trial is not None else False
        if trainer.strategy.broadcast(pruned, src=0):  # every rank stops, or the others would wait for rank 0
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {trainer.current_epoch}")

    def report(self, pl_module: L.LightningModule) -> bool:
        """Report the epochs the trial lacks; whether the pruner stops it now."""
        metric = pl_module.primary_metric.name
        reported = self.trial.study.get_trials(deepcopy=False)[self.trial.number].intermediate_values
        for row in pl_module.history:
            if metric in row and int(row["epoch"]) not in reported and math.isfinite(row[metric]):
                self.trial.report(row[metric], int(row["epoch"]))
        return self.trial.should_prune()
