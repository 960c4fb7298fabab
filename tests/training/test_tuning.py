"""c3exp's Optuna sweeper (c3exp/training/tuning.py, hydra_plugins/c3exp_optuna) on the bundled digits: the search
space from Hydra's grammar, a study that a kill does not lose, pruning by epochs, and two workers on one study."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from c3exp.errors import ConfigError
from c3exp.training.tuning import best_command, open_storage, search_space, trial_overrides
from tests.conftest import SMALL_DIGITS, assert_names_bad_setting

SEARCH = ["hparams_search=optuna", *SMALL_DIGITS, "trainer=cpu", "data.val_split=180", "hydra.sweeper.study_name=digits"]
THRESHOLD_PRUNER = ["~hydra.sweeper.pruner", "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.01}"]


def test_the_search_space_follows_hydras_sweep_grammar():
    params = {"optim.optimizer.lr": "tag(log, interval(0.01, 0.5))", "data.batch_size": "range(32, 129, 32)"}
    space, fixed = search_space(params, ["model=resnet20", "attn=se,c3", "trainer.max_epochs=tag(int, interval(2, 5))"])
    assert space["optim.optimizer.lr"] == optuna.distributions.FloatDistribution(0.01, 0.5, log=True)
    assert space["data.batch_size"] == optuna.distributions.IntDistribution(32, 128, step=32)
    assert space["attn"] == optuna.distributions.CategoricalDistribution(["se", "c3"])
    assert space["trainer.max_epochs"] == optuna.distributions.IntDistribution(2, 5)
    assert fixed == ["model=resnet20"]


def test_a_parameter_that_is_no_sweep_is_one_line():
    with pytest.raises(ConfigError) as error:
        search_space({"optim.optimizer.lr": "0.1"}, [])
    assert_names_bad_setting(str(error.value), "hydra.sweeper.params.optim.optimizer.lr", "optim.optimizer.lr=0.1")
    assert error.value.allowed == "interval(a, b), range(a, b), choice(...) or a,b,c"


def test_a_choice_of_lists_reaches_the_job_as_lists():
    """A categorical parameter holds each choice's override text; the job's override is that text, unquoted."""
    space, _ = search_space({}, ["attn.stages=[1],[4]"])
    trial = optuna.trial.create_trial(params={"attn.stages": "[4]"}, distributions=space, value=0.5)
    trial.number = 3
    assert trial_overrides(trial, "trial3") == ["attn.stages=[4]", "hydra.sweep.subdir=trial3", "+hydra.job.env_set.C3EXP_OPTUNA_TRIAL=3"]


def test_the_best_command_is_one_run_without_the_searchs_own_settings():
    command = best_command({"optim.optimizer.lr": 0.05, "attn": "c3"},
                           ["hparams_search=optuna", "model=resnet56", "hydra.sweep.dir=/x", "+hydra.job.env_set.A=1"])
    assert command == "python -m c3exp model=resnet56 optim.optimizer.lr=0.05 attn=c3"


def search(sweep: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "c3exp", *SEARCH, f"hydra.sweep.dir={sweep}", *args], cwd=sweep.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def finished(process: subprocess.Popen, timeout: float = 600) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def trials(sweep: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="digits", storage=open_storage(str(sweep / "optuna.journal"))).get_trials()


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def running_with_a_checkpoint(sweep: Path, number: int) -> bool:
    found = (sweep / "optuna.journal").exists() and trials(sweep)
    return bool(found) and len(found) > number and (sweep / f"trial{number}" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_killed_search_run_again_keeps_its_trials_and_continues_the_killed_one(tmp_path):
    sweep = tmp_path / "sweep"
    first = search(sweep, "hydra.sweeper.n_trials=3", "trainer.max_epochs=3")
    wait_for(lambda: running_with_a_checkpoint(sweep, 1))  # trial 0 done, trial 1 has saved an epoch
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    before = trials(sweep)
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    trial0_results = (sweep / "trial0" / "results.json").read_bytes()

    out = finished(search(sweep, "hydra.sweeper.n_trials=3", "trainer.max_epochs=3"))
    after = trials(sweep)
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert (after[0].params, after[0].value) == (before[0].params, before[0].value)  # kept, not run again
    assert (sweep / "trial0" / "results.json").read_bytes() == trial0_results
    retry = after[2]  # the killed trial, asked again with its parameters in its own folder
    assert retry.params == before[1].params and retry.user_attrs["retry_of"] == 1 and retry.user_attrs["subdir"] == "trial1"
    assert "resume=auto: continuing from" in (sweep / "trial1" / "train.log").read_text()
    history = json.loads((sweep / "trial1" / "results.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2] and retry.value == max(row["val/acc1"] for row in history)
    assert not (sweep / "trial2").exists()
    best = json.loads((sweep / "optuna_best.json").read_text())
    assert best["best_value"] == max(t.value for t in after if t.value is not None)
    assert best["trials"]["complete"] == 3 and best["command"] in out


@pytest.mark.slow
def test_a_pruned_trial_is_recorded_as_pruned_with_its_epochs(tmp_path):
    """ThresholdPruner(lower=1.01): no accuracy reaches it, so every trial is pruned at its first epoch."""
    sweep = tmp_path / "sweep"
    finished(search(sweep, "hydra.sweeper.n_trials=2", "trainer.max_epochs=3", *THRESHOLD_PRUNER))
    found = trials(sweep)
    assert [t.state.name for t in found] == ["PRUNED", "PRUNED"]
    for trial in found:
        assert list(trial.intermediate_values) == [0]  # epoch 0, then stopped
        assert not (sweep / f"trial{trial.number}" / "results.json").exists()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed", "completed"]


@pytest.mark.slow
def test_two_workers_share_one_study_without_running_a_trial_twice(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["hydra.sweeper.n_trials=4", "trainer.max_epochs=3"]
    first = search(sweep, *args)
    wait_for(lambda: running_with_a_checkpoint(sweep, 0))  # the first worker is busy with trial 0
    second = search(sweep, *args)
    finished(first), finished(second)
    found = trials(sweep)
    assert [t.state.name for t in found] == ["COMPLETE"] * 4
    assert len({t.user_attrs["worker"] for t in found}) == 2  # both took trials
    assert len({tuple(sorted(t.params.items())) for t in found}) == 4  # no point drawn twice
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("trial*/results.json"))]
    assert [Path(run["run_dir"]).name for run in runs] == ["trial0", "trial1", "trial2", "trial3"]
    for trial in found:  # each trial's value is its own run's
        run = json.loads((sweep / trial.user_attrs["subdir"] / "results.json").read_text())
        assert trial.value == run["best_val_acc1"]


@pytest.mark.slow
def test_diverging_trials_are_pruned_and_the_search_goes_on(tmp_path):
    """An lr of 1e6 turns the loss to NaN in the first steps: each such trial ends pruned (marked diverged),
    its job fails alone, and the search still finishes its trials instead of ending at the first."""
    sweep = tmp_path / "sweep"
    out = finished(search(sweep, "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "optim.optimizer.lr=tag(log, interval(1e6, 1e7))"))
    found = trials(sweep)
    assert [(t.state.name, t.user_attrs.get("diverged")) for t in found] == [("PRUNED", True), ("PRUNED", True)]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["failed", "failed"]
    assert "NonFiniteLossError" in summary[0]["error"] and not (sweep / "optuna_best.json").exists()
    assert "best trial" not in out
    assert "sweep finished: 0 of 2 jobs completed, 2 failed" in out
