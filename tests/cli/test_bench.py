"""`c3exp bench` from the command line (c3exp/cli/bench.py): help from conf/bench.yaml, and a bad setting in one line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from c3exp.cli.bench import main
from c3exp.paths import config_dir
from tests.conftest import REPO, assert_names_bad_setting

MODES = ("steps", "loop")


@pytest.mark.slow
def test_python_m_c3exp_bench_reports_a_bad_setting_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "c3exp.bench", "bench.mode=fast"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert_names_bad_setting(result.stderr, "bench.mode", "fast")
    assert ", ".join(MODES) in result.stderr
    assert result.stdout == "" and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage(capsys, flag):
    main([flag])
    out = capsys.readouterr().out
    assert out.startswith("usage: c3exp bench") and "example: " in out
    for key, value in OmegaConf.load(config_dir() / "bench.yaml").bench.items():  # every setting, with its default
        assert f"  bench.{OmegaConf.to_yaml({key: value}).strip().replace(': ', '=')} " in out, key
