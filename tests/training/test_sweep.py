"""Scale-out and fault tolerance: DDP on CPU, multirun with W&B offline, submitit, SIGKILL, NaN."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from c3exp.config import check_command_line
from c3exp.eval import evaluate
from c3exp.train import train
from c3exp.errors import NonFiniteLossError
from c3exp.tasks import ClassificationModule
from tests.conftest import TINY_DIGITS, c3exp_cli, run_config
from tests.wandb_records import read_offline_run

SMALL = ["data=digits", "trainer.enable_progress_bar=false", "trainer.limit_train_batches=4",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
TIMING = {"train/epoch_time", "train/images_per_sec"}


def history(results: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in results["history"]]


@pytest.mark.slow
def test_ddp_on_cpu_makes_one_run_dir_with_correct_metrics(tmp_path):
    run_dir = tmp_path / "run"
    done = c3exp_cli(["trainer=ddp_sim", *SMALL, "trainer.max_epochs=1", "data.val_split=180",
                      "trainer.limit_val_batches=null", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no per-rank directories anywhere
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 1
    # 4 steps of the global batch 32, split 16 + 16 over the 2 processes
    assert results["history"][0]["train/images_per_sec"] > 0
    # the synchronised validation accuracy over both processes' halves matches a single-process evaluation
    single = evaluate(results["checkpoints"]["last"], ["trainer.accelerator=cpu"])
    # both see the same 64 test images (2 batches of 32; in DDP 2 x 16 per rank, interleaved): at most
    # one prediction may flip from float differences between batch sizes
    assert single["test/acc1"] == pytest.approx(results["test_acc1"], abs=1 / 64 + 1e-6)


@pytest.mark.slow
def test_multirun_with_wandb_offline_makes_one_wandb_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", "model=resnet20,resnet32", "attn=none,c3", "logger=wandb", *SMALL,
                      "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    job_dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(job_dirs) == 4
    ids = set()
    for job_dir in job_dirs:
        results = json.loads((job_dir / "results.json").read_text())
        run = read_offline_run(job_dir)
        ids.add(run["id"])
        assert run["group"] == f"{sweep.name}/{results['model']}-{results['attn']}-digits"
        logged = [row["val/acc1"] for row in run["history"] if "val/acc1" in row]
        assert logged == pytest.approx([row["val/acc1"] for row in results["history"]])
        assert any("model/params" in row for row in run["history"])
    assert len(ids) == 4
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed"] * 4


@pytest.mark.slow
def test_a_failing_sweep_job_is_reported_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", "model.depth=20,21", *SMALL, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode != 0
    summary = {job["job"]: job for job in json.loads((sweep / "sweep_summary.json").read_text())}
    assert summary[0]["status"] == "completed" and summary[1]["status"] == "failed"
    assert summary[1]["error"].startswith("ConfigError: model.depth=21 is not valid")
    assert len(list(sweep.glob("*/results.json"))) == 1
    # the sweep ends on the first failure's one line, not a traceback
    assert "Traceback" not in done.stderr
    assert f"error: job 1: model.depth=21 is not valid: expected 6k+2" in done.stderr
    assert f"(every job's status: {sweep}/sweep_summary.json)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local", "parallel"])
def test_launcher_runs_a_two_job_sweep(tmp_path, launcher: str):
    """submitit's local executor stands in for SLURM; `parallel` is joblib, jobs side by side."""
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["-m", f"hydra/launcher={launcher}", "seed=0,1", *SMALL, "trainer.max_epochs=1",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/results.json"))
    assert seeds == [0, 1]


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_resumes_to_identical_metrics(tmp_path):
    args = [*SMALL, "model=resnet20", "attn=c3", "trainer.max_epochs=3", "trainer.limit_train_batches=12",
            "trainer.deterministic=true"]
    straight = c3exp_cli([*args, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "c3exp", *args, f"hydra.run.dir={run_dir}"]
    victim = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "results.json").exists()

    resumed = c3exp_cli([*args, f"hydra.run.dir={run_dir}", "resume=auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())
    got = json.loads((run_dir / "results.json").read_text())
    assert history(got) == history(expected)
    assert (got["test_acc1"], got["test_acc5"]) == (expected["test_acc1"], expected["test_acc5"])


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    first = train(run_config(TINY_DIGITS + ["trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                            "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"], tmp_path))
    last = Path(first["checkpoints"]["last"])
    before = (last.stat().st_mtime_ns, torch.load(last, weights_only=False)["epoch"])

    original = ClassificationModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 1 and batch_idx == 1 else loss

    monkeypatch.setattr(ClassificationModule, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1") as error:
        train(run_config(TINY_DIGITS + ["trainer.max_epochs=3", "trainer.limit_train_batches=3",
                                        "trainer.limit_val_batches=2", "resume=auto"], tmp_path))
    suggested = re.findall(r"\b((?:optim|trainer)\.[\w.]*\w)(=[\d.]+)?", str(error.value))
    assert [key for key, _ in suggested] == ["optim.optimizer.lr", "trainer.gradient_clip_val"]
    for key, value in suggested:  # what the message suggests is a setting the command line takes
        check_command_line([f"{key}{value or '=0.05'}"])
    assert (last.stat().st_mtime_ns, torch.load(last, weights_only=False)["epoch"]) == before


def test_same_seed_deterministic_runs_give_identical_metrics(tmp_path):
    args = TINY_DIGITS + ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                          "trainer.limit_test_batches=2", "trainer.deterministic=true", "seed=3"]
    one = train(run_config(args, tmp_path / "one"))
    two = train(run_config(args, tmp_path / "two"))
    assert history(one) == history(two) and one["test_acc1"] == two["test_acc1"]


@pytest.mark.slow
def test_optuna_search_maximises_the_returned_objective(tmp_path):
    sweep = tmp_path / "sweep"
    done = c3exp_cli(["hparams_search=optuna", "hydra.sweeper.n_trials=2", *SMALL, "data.val_split=180", "trainer.max_epochs=1",
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    import yaml

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(trials) == 2
    assert best["best_value"] == pytest.approx(max(t["best_val_acc1"] for t in trials))
    assert set(best["best_params"]) == {"optim.optimizer.lr", "optim.optimizer.weight_decay"}


@pytest.mark.slow
def test_resume_is_exact_with_dataloader_workers(tmp_path):
    args = TINY_DIGITS + ["data.num_workers=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                          "trainer.limit_test_batches=2"]
    straight = train(run_config(args + ["trainer.max_epochs=2"], tmp_path / "straight"))
    first = train(run_config(args + ["trainer.max_epochs=1"], tmp_path / "legs"))
    resumed = train(run_config(args + ["trainer.max_epochs=2"], tmp_path / "legs"))  # resume=auto
    assert first["epochs"] == 1 and history(resumed) == history(straight)
