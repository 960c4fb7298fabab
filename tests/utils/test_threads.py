"""A SLURM job's threads: the CPUs it was given, not every core of the node."""
from __future__ import annotations

import pytest
import torch

from c3exp.utils.threads import use_the_cpus_slurm_gave


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_slurm_job_uses_as_many_threads_as_its_cpus(monkeypatch, threads):
    torch.set_num_threads(2)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert use_the_cpus_slurm_gave() == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("env", [{}, {"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "2"}, {"SLURM_CPUS_PER_TASK": ""}])
def test_outside_slurm_or_with_omp_num_threads_the_count_stays(monkeypatch, threads, env):
    torch.set_num_threads(2)
    for key in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert use_the_cpus_slurm_gave() is None and torch.get_num_threads() == 2
