"""Training pieces: the LightningModule, callbacks and the results file."""
from c3exp.training.callbacks import EpochSeed
from c3exp.training.module import ClassificationModule

__all__ = ["ClassificationModule", "EpochSeed"]
