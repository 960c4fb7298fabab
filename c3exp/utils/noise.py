"""The console keeps what a researcher acts on: no library adverts, no warnings about what c3exp does on purpose."""
from __future__ import annotations

import logging
import warnings

#: Warnings c3exp triggers by design: (message regex, why it is noise here).
EXPECTED_WARNINGS = (
    # Lightning's own pytree helper calls a torch API that torch deprecated; nothing in c3exp to change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Metrics are logged per epoch; small data sets (digits, tests) have fewer batches than the interval.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # A machine with SLURM's client but a job started without srun (a laptop cluster's login node).
    r"The `srun` command is available on your system but is not used",
    # task.cuda_graphs: a graphed training step runs backward and the optimiser itself and returns nothing.
    r"`training_step` returned `None`",
)


def drop_tips(record: logging.LogRecord) -> bool:
    """Lightning's "💡 Tip: try installing ..." advertisements."""
    return not str(record.msg).startswith("💡 Tip")


def silence_library_noise() -> None:
    """Drop expected warnings and tips; Lightning's own console handler goes where Hydra's would print lines twice."""
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(drop_tips)  # added once, however often called
    lightning = logging.getLogger("lightning")
    if logging.getLogger().hasHandlers():
        for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
            lightning.removeHandler(handler)
