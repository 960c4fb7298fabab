"""Hydra takes a sweeper only from a class under hydra_plugins; the work is done in c3exp.training.tuning."""
from c3exp.training import tuning


class OptunaSweeper(tuning.OptunaSweeper):
    """`hparams_search=optuna` (conf/hydra/sweeper/optuna.yaml); see c3exp.training.tuning."""
