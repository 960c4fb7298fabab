"""Checkpoints from elsewhere: a pickle that would run code is refused in one line, and nothing runs."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from c3exp.cli import train as train_cli
from c3exp.checkpoints import TRUST_ENV, open_checkpoint
from c3exp.cli.eval import main as eval_main
from tests.conftest import assert_names_bad_setting, error_line


class RunsCode:
    """Unpickling this calls Path.touch(marker): a stand-in for whatever a malicious checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


def booby_trapped(path: Path, marker: Path) -> Path:
    """A file that looks like a c3exp checkpoint and runs code when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"c3exp": {"history": []}, "state_dict": {"weight": torch.zeros(2)}, "extra": RunsCode(marker)}, path)
    return path


REFUSAL = rf"this one holds [\w.]+; {TRUST_ENV}=1 opens a file you trust"


def assert_refused(line: str, key: str, ckpt: Path) -> None:
    """One line naming `key` and the file, what in it would run and how to open it anyway."""
    assert_names_bad_setting(line, key, str(ckpt))
    assert re.search(f"{REFUSAL}$", line.strip()), line


def test_eval_refuses_a_checkpoint_that_would_run_code(tmp_path, marker, capsys):
    ckpt = booby_trapped(tmp_path / "shared.ckpt", marker)
    assert_refused(error_line(lambda: eval_main([f"ckpt_path={ckpt}"]), capsys), "ckpt_path", ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["ckpt_path", "resume=auto"])
def test_training_refuses_a_checkpoint_that_would_run_code(tmp_path, marker, capsys, monkeypatch, how):
    run_dir = tmp_path / "run"
    ckpt = booby_trapped(run_dir / "checkpoints" / "last.ckpt", marker)
    args = ["data=digits", "trainer=cpu", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    monkeypatch.setattr(sys, "argv", ["c3exp", *args, f"ckpt_path={ckpt}" if how == "ckpt_path" else "resume=auto"])
    key = "ckpt_path" if how == "ckpt_path" else "resume"
    assert_refused(error_line(train_cli.main, capsys), key, ckpt)
    assert not marker.exists()


def test_the_documented_opt_in_opens_a_trusted_file(tmp_path, marker, monkeypatch):
    """What the refusals above prevent: the same file, opened with the opt-in, runs its code."""
    ckpt = booby_trapped(tmp_path / "mine.ckpt", marker)
    monkeypatch.setenv(TRUST_ENV, "1")
    open_checkpoint(ckpt)
    assert marker.exists()


@pytest.mark.parametrize(
    "contents,missing",
    [
        ({"c3exp": {"history": [], "config": {"seed": 0}}}, "weights (state_dict)"),
        ({"c3exp": {"history": []}, "state_dict": {}}, "run config (c3exp.config)"),
        ({"c3exp": {"history": []}}, "weights (state_dict) and no run config (c3exp.config)"),
    ],
)
@pytest.mark.parametrize("overrides", [[], ["data.batch_size=4"]], ids=["alone", "with an override"])
def test_an_incomplete_checkpoint_is_named_with_what_it_lacks(tmp_path, capsys, contents, missing, overrides):
    """Eval would rebuild the default config, and with an override blame the override, instead of the file."""
    ckpt = tmp_path / "incomplete.ckpt"
    torch.save(contents, ckpt)
    err = error_line(lambda: eval_main([f"ckpt_path={ckpt}", *overrides]), capsys)
    assert_names_bad_setting(err, "ckpt_path", str(ckpt))
    assert err.endswith(f": this one has no {missing}\n"), err
