"""`c3exp <command>` (c3exp/cli/__init__.py): the commands listed one line each, a word that is no command one line,
no command name still trains; every command's --help answered without importing torch or Lightning."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from c3exp.cli import COMMANDS


def c3exp(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "c3exp", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_lists_the_seven_commands_one_line_each():
    done = c3exp("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: c3exp <command>"), done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert listed == ["train", "eval", "report", "summary", "analyze", "bench", "demo"] == list(COMMANDS)


@pytest.mark.parametrize("args", [["train"], []], ids=["train", "no command name"])
def test_train_cfg_job_prints_the_composed_config(tmp_path, args):
    done = c3exp(*args, "--cfg", "job", "attn=se", "data=digits", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert (cfg["attn"]["name"], cfg["data"]["name"], cfg["model"]["name"]) == ("se", "digits", "resnet20")
    assert not (tmp_path / "outputs").exists()


def test_an_unknown_command_is_one_line_and_status_2(tmp_path):
    done = c3exp("evaluate", "ckpt_path=x.ckpt", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "outputs").exists()
    assert done.stderr == f"error: command='evaluate' is not valid: expected one of {', '.join(COMMANDS)}\n"


HELP_COMMANDS = [["-m", "c3exp", name, "--help"] for name in COMMANDS] + [
    ["-m", f"c3exp.{name}", "-h"] for name in COMMANDS if name != "train"]


@pytest.mark.parametrize("args", HELP_COMMANDS, ids=" ".join)
def test_every_help_is_answered_without_torch_or_lightning(tmp_path, args):
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    name = args[2] if args[1] == "c3exp" else args[1].removeprefix("c3exp.")
    assert done.stdout.startswith("c3exp: channel attention" if name == "train" else f"usage: c3exp {name}")
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {module.split(".")[0] for module in imported} & {"torch", "lightning", "torchvision"}
    assert not (tmp_path / "outputs").exists()
