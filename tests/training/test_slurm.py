"""Sweeps on a real single-node SLURM cluster (scripts/slurm-local.sh): submission, failures, preemption,
time limits, scancel and DDP, through `hydra/launcher=slurm` (submitit) exactly as on a real cluster."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from c3exp.cli.eval import evaluate
from c3exp.checkpoints import open_checkpoint
from tests.conftest import assert_names_bad_setting, c3exp_cli
from tests.training.test_slurm_local_script import daemon_pids, exported, script, skip_without_slurm
from tests.wandb_records import read_offline_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# The local cluster's node has no GPU and the machine's CPUs: one CPU per task, no memory request.
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=null"]
SMALL = ["data=digits", "trainer.enable_progress_bar=false", "trainer.limit_train_batches=4",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.max_epochs=1"]
# Long enough to be stopped mid-training (about 2 s an epoch on one CPU), exactly reproducible.
LONG = ["data=digits", "attn=c3", "trainer.enable_progress_bar=false", "trainer.limit_train_batches=12",
        "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.deterministic=true"]
TIMING = {"train/epoch_time", "train/images_per_sec"}
# Two jobs share the 2 CPUs of CI: one thread each, not two threads each fighting for them
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@dataclass
class Cluster:
    state_dir: Path
    env: dict[str, str]

    def command(self, *args: str) -> str:
        done = subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """The jobs SLURM holds (queued, running or finished a short while ago): id -> state."""
        lines = self.command("squeue", "--noheader", "--array", "--states=all", "--format=%i %T").split("\n")
        return dict(line.split() for line in lines if line.strip())

    def restarts(self, job_id: str) -> int:
        """How many times SLURM has requeued the job (scontrol's Restarts=)."""
        fields = dict(f.split("=", 1) for f in self.command("scontrol", "--oneliner", "show", "job", job_id).split() if "=" in f)
        return int(fields["Restarts"])

    def sweep(self, args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
        """Start `python -m c3exp -m ...` in the background, the way a user submits a sweep from a login node."""
        env = {**os.environ, **self.env, **ONE_THREAD, "WANDB_API_KEY": "", "NETRC": "/nonexistent"}
        return subprocess.Popen([sys.executable, "-m", "c3exp", "-m", *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.fixture(scope="module")
def slurm() -> Iterator[Cluster]:
    """A running single-node cluster for this module's tests, stopped afterwards."""
    skip_without_slurm()
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root: slurmd starts each job as the user who submitted it")
    up = script("up")  # in a fresh folder of its own choosing, which it prints
    if up.returncode != 0:  # installed but not starting: a failure to look at, not a skip
        pytest.fail(f"the local SLURM cluster did not start: {up.stderr.strip()}")
    state_dir = Path(exported(up.stdout)["C3EXP_SLURM_DIR"])
    daemons = daemon_pids(state_dir)
    try:
        yield Cluster(state_dir, {"SLURM_CONF": str(state_dir / "slurm.conf")})
    finally:
        script("down", str(state_dir))
        assert not [pid for pid in daemons if Path(f"/proc/{pid}").exists()], "slurm-local.sh down left daemons running"
        shutil.rmtree(state_dir)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def finished(launcher: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = launcher.communicate(timeout=timeout)
    return output


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: int(p.name.split("_")[0]))


def results(job_dir: Path) -> dict:
    return json.loads((job_dir / "results.json").read_text())


def metrics(result: dict) -> tuple:
    """What must not change when a run is interrupted: every epoch's metrics but timings, and the test metrics."""
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in result["history"]]
    return history, {k: v for k, v in result.items() if k.startswith("test_")}


def checkpoint_epoch(job_dir: Path) -> int:
    """The epoch the run's last.ckpt continues from (-1 while there is none or it is being written)."""
    try:
        return int(open_checkpoint(job_dir / "checkpoints" / "last.ckpt")["epoch"])
    except Exception:
        return -1


def csv_epochs(job_dir: Path) -> list[int]:
    """The epochs of the metrics CSV's validation rows, in file order."""
    with open(job_dir / "csv" / "metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/acc1")]


def wandb_run_ids(job_dir: Path) -> list[str]:
    """The W&B run id of each process that logged into the run directory (one offline-run folder each)."""
    return [p.name.rpartition("-")[2] for p in sorted(job_dir.glob("wandb/offline-run-*"))]


def test_a_2x2_sweep_is_four_slurm_jobs_with_their_own_run_dirs_and_wandb_runs(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    output = finished(slurm.sweep([*LAUNCHER, "model=resnet20,resnet32", "attn=none,c3", "logger=wandb", *SMALL,
                                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path))
    assert "sweep finished: all 4 jobs completed" in output, output[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed"] * 4
    assert len({job["slurm_job_id"] for job in summary}) == 4  # one SLURM job (array task) per sweep job
    wait_for(lambda: {slurm.jobs()[job["slurm_job_id"]] for job in summary} == {"COMPLETED"}, "SLURM to see 4 completed jobs", 60)
    runs = set()
    for job, job_dir in zip(summary, job_dirs(sweep)):
        assert job["run_dir"] == str(job_dir)
        result = results(job_dir)
        assert (result["model"], result["attn"]) == tuple(o.partition("=")[2] for o in job["overrides"][:2])
        assert job["best"] == pytest.approx(result["best_val_acc1"])
        log = Path(job["stdout"]).read_text()  # SLURM's output file of the job, as summarised
        assert "resume=auto: no checkpoint yet" in log and "epoch 0/0: train/loss=" in log
        run = read_offline_run(job_dir)
        assert [row["val/acc1"] for row in run["history"] if "val/acc1" in row] == pytest.approx(
            [row["val/acc1"] for row in result["history"]])
        runs.add(run["id"])
    assert len(runs) == 4


def test_a_job_with_a_bad_value_fails_alone(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    launcher = slurm.sweep([*LAUNCHER, "model.depth=20,21", *SMALL, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    output = finished(launcher)
    assert launcher.returncode != 0
    summary = {job["job"]: job for job in json.loads((sweep / "sweep_summary.json").read_text())}
    assert summary[0]["status"] == "completed" and summary[1]["status"] == "failed"
    assert summary[1]["error"].startswith("ConfigError: model.depth=21 is not valid")
    assert [p.parent.name.split("_")[0] for p in sweep.glob("*/results.json")] == ["0"]
    line = next(line for line in output.splitlines() if "error: job 1: " in line)
    assert_names_bad_setting(line, "model.depth", 21)
    assert "6k+2" in line
    assert "Traceback" not in output


def test_a_requeued_job_resumes_to_the_metrics_of_an_uninterrupted_run(slurm, tmp_path):
    """Preemption as SLURM does it: `scontrol requeue` kills the running job and queues it again."""
    sweep = tmp_path / "sweep"
    # job 0 runs straight through; job 1, the same run, is requeued once its first epoch is saved
    launcher = slurm.sweep([*LAUNCHER, "seed=0,0", *LONG, "trainer.max_epochs=6", "logger=wandb",
                            f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    wait_for(lambda: sweep.is_dir() and len(job_dirs(sweep)) == 2 and checkpoint_epoch(job_dirs(sweep)[1]) >= 1,
             "job 1's first checkpoint")
    straight, requeued = job_dirs(sweep)
    (job_id,) = [job for job, state in slurm.jobs().items() if job.endswith("_1") and state == "RUNNING"]
    slurm.command("scontrol", "requeue", job_id)
    output = finished(launcher)
    assert launcher.returncode == 0, output[-3000:]

    assert slurm.restarts(job_id) == 1 and slurm.restarts(job_id.replace("_1", "_0")) == 0
    assert "resume=auto: continuing from" in (requeued / "train.log").read_text()
    assert metrics(results(requeued)) == metrics(results(straight))
    assert csv_epochs(requeued) == csv_epochs(straight) == list(range(6))
    ids = wandb_run_ids(requeued)
    assert len(ids) == 2 and len(set(ids)) == 1  # two processes, one W&B run
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed"] * 2


def test_a_job_past_its_time_limit_is_requeued_by_submitit_and_ends_as_if_uninterrupted(slurm, tmp_path):
    """A 1-minute limit: submitit requeues the job on SLURM's SIGUSR2 (max_num_timeout) until it is done.

    slurmctld checks time limits every 30 s and signals a job once `elapsed + signal_delay_s + 30 >=
    limit`: with a 1 s delay, 29-59 s into each run. 36 epochs (about 70 s) need at least two runs.
    """
    run = [*LONG, "trainer.max_epochs=36"]
    sweep = tmp_path / "sweep"
    launcher = slurm.sweep([*LAUNCHER, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1",
                            "hydra.launcher.max_num_timeout=6", "seed=0", *run, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    # meanwhile the same run without SLURM and without a limit
    straight = c3exp_cli([*run, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path, env=ONE_THREAD)
    assert straight.returncode == 0, straight.stderr[-3000:]
    output = finished(launcher, timeout=900)
    assert launcher.returncode == 0, output[-3000:]
    (job_dir,) = job_dirs(sweep)
    (status,) = json.loads((sweep / "sweep_summary.json").read_text())
    log = Path(status["stdout"]).read_text()
    assert slurm.restarts(status["slurm_job_id"]) >= 1 and "this job is timed-out" in log
    assert "resume=auto: continuing from" in (job_dir / "train.log").read_text()
    assert metrics(results(job_dir)) == metrics(results(tmp_path / "straight"))
    assert csv_epochs(job_dir) == list(range(36))


def test_a_cancelled_sweep_keeps_readable_checkpoints_and_resubmitting_it_continues_every_job(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    args = [*LAUNCHER, "seed=0,1", *LONG, "trainer.max_epochs=6", f"hydra.sweep.dir={sweep}"]
    launcher = slurm.sweep(args, cwd=tmp_path)
    wait_for(lambda: sweep.is_dir() and len(job_dirs(sweep)) == 2 and min(map(checkpoint_epoch, job_dirs(sweep))) >= 1,
             "a checkpoint of each job")
    running = [job for job, state in slurm.jobs().items() if state == "RUNNING"]
    assert len(running) == 2
    slurm.command("scancel", *running)
    wait_for(lambda: {slurm.jobs()[job] for job in running} == {"CANCELLED"}, "the cancelled jobs to end", 60)
    # Without an accounting database submitit cannot learn that the jobs were cancelled: stop it as a user would
    launcher.send_signal(signal.SIGINT)
    finished(launcher, timeout=60)
    saved = {}
    for job_dir in job_dirs(sweep):
        assert not (job_dir / "results.json").exists()
        saved[job_dir.name] = checkpoint_epoch(job_dir)
        assert 1 <= saved[job_dir.name] < 6  # a complete checkpoint, mid-run

    again = slurm.sweep(args, cwd=tmp_path)
    output = finished(again)
    assert again.returncode == 0, output[-3000:]
    for job_dir in job_dirs(sweep):
        assert f"continuing from {job_dir / 'checkpoints'}" in (job_dir / "train.log").read_text()
        assert [row["epoch"] for row in results(job_dir)["history"]] == list(range(6))
        assert csv_epochs(job_dir) == list(range(6))


def test_ddp_runs_as_two_slurm_tasks_of_one_job_in_one_run_dir(slurm, tmp_path):
    sweep = tmp_path / "sweep"
    output = finished(slurm.sweep([*LAUNCHER, "hydra.launcher.tasks_per_node=2", "trainer=ddp_sim", *SMALL,
                                   "data.val_split=180", "trainer.limit_val_batches=null", f"hydra.sweep.dir={sweep}"],
                                  cwd=tmp_path))
    assert "sweep finished: all 1 jobs completed" in output, output[-3000:]
    (job_dir,) = job_dirs(sweep)
    (status,) = json.loads((sweep / "sweep_summary.json").read_text())
    # both SLURM tasks of the one job joined one process group: rank 0 and rank 1 of 2 (Lightning logs through
    # Hydra's console handler, so on stdout)
    logs = [Path(status["stdout"].replace("_0_log.out", f"_{task}_log.out")).read_text() for task in (0, 1)]
    assert all(f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log for rank, log in enumerate(logs))
    result = results(job_dir)
    # the test accuracy synchronised over both tasks (2 x 16 images a batch) is the single-process one over
    # the same 64 images (2 x 32), up to one prediction flipped by float differences between batch sizes
    single = evaluate(result["checkpoints"]["last"], ["trainer.accelerator=cpu"])
    assert single["test/acc1"] == pytest.approx(result["test_acc1"], abs=1 / 64 + 1e-6)
