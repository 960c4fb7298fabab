"""How many CPU threads a run uses."""
from __future__ import annotations

import os

import torch


def use_the_cpus_slurm_gave() -> int | None:
    """In a SLURM job, as many intra-op threads as the job's CPUs (--cpus-per-task); the count set, or None.

    PyTorch starts one thread per core of the node whatever SLURM allocated (without CPU binding, as
    on clusters with TaskPlugin=task/none), so jobs that share a node thrash each other's cores. An
    exported OMP_NUM_THREADS still wins.
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not cpus.isdigit() or int(cpus) < 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    torch.set_num_threads(int(cpus))
    return int(cpus)
