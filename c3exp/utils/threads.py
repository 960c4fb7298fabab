"""How many CPU threads a run uses."""
from __future__ import annotations

import os

import torch


def use_the_cpus_slurm_gave() -> int | None:
    """As many threads as SLURM's --cpus-per-task (torch takes the node's cores); the count set, or None."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not cpus.isdigit() or int(cpus) < 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    torch.set_num_threads(int(cpus))
    return int(cpus)
