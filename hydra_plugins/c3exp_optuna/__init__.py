"""c3exp's Optuna sweeper where Hydra looks for plugins: Hydra takes a sweeper only from a class defined under
hydra_plugins. The work is done in c3exp.training.tuning."""
from c3exp.training import tuning


class OptunaSweeper(tuning.OptunaSweeper):
    """`hparams_search=optuna` (conf/hydra/sweeper/optuna.yaml); see c3exp.training.tuning."""
