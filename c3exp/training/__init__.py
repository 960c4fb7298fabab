"""Training pieces shared by every task: callbacks, loggers, sweep bookkeeping."""
from c3exp.training.callbacks import EpochSeed

__all__ = ["EpochSeed"]
