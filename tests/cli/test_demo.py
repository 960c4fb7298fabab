"""`c3exp demo` (c3exp/cli/demo.py): its comparison table of two runs, and a failed run's one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_names_bad_setting


def run_demo(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "c3exp.demo", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # runs the demo's training subprocesses: 17-33 s on a slow 2-core host
def test_demo_title_names_the_epochs_and_model_that_ran(tmp_path):
    done = run_demo(["trainer.max_epochs=1", "model=resnet32", "trainer.limit_train_batches=2",
                     "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\nResNet-32 on digits (1 epoch, CPU):\n" in done.stdout
    assert "$ python -m c3exp experiment=quickstart attn=none " in done.stdout  # the command, to copy as it is
    assert "5 epochs" not in done.stdout


@pytest.mark.slow  # runs the demo's training subprocesses: 17-33 s on a slow 2-core host
def test_demo_ends_with_the_failed_runs_status_and_no_traceback(tmp_path):
    done = run_demo(["model=resnet21"], tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr
    first_error = [line for line in done.stderr.splitlines() if line.startswith("error: ")][0]
    assert_names_bad_setting(first_error, "model", "resnet21")


def test_help_prints_the_usage_and_runs_nothing(capsys, tmp_path, monkeypatch):
    from c3exp.cli.demo import main

    monkeypatch.chdir(tmp_path)
    main(["--help"])
    assert capsys.readouterr().out.startswith("usage: c3exp demo [key=value ...]")
    assert not (tmp_path / "outputs").exists()
