"""`c3exp train` (c3exp/cli/train.py): bad input fails before training with one line naming the key, the value and
what is allowed; Hydra's flags and help; run directories; no noise."""
from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from c3exp.config import GROUPS, group_choices
from tests.conftest import SMALL_DIGITS, assert_names_bad_setting, run_main


FAST = ["data=digits", "trainer=cpu", "debug=fast", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize(
    "override,key,value,specific",
    [
        ("model.depth=21", "model.depth", 21, "6k+2"),
        ("optim.optimizer.lr=-0.1", "optim.optimizer.lr", -0.1, None),
        ("data=imagenet21k", "data", "imagenet21k", ", ".join(group_choices("data"))),
        ("data.batch_size=0", "data.batch_size", 0, None),
        ("attn.placement=diagonal", "attn.placement", "diagonal", None),
        ("attn.options.spatial_sizes=[[16,16]]", "attn.options.spatial_sizes", [[16, 16]], None),
        ("attn=c3,sparse", "attn", "sparse", ", ".join(group_choices("attn"))),
        ("keep_freed_memory=sometimes", "keep_freed_memory", "sometimes", None),
        ("data=imagefolder", "data.root", "???", "data.root has no default"),
        ("~model.width", "model.width", "???", "c3exp.models.cifar_resnet.cifar_resnet has no default"),
        # Lightning's own words follow c3exp's part, which names the settings it was given
        ("trainer.precision=17", None, None, "Lightning rejects the trainer settings (trainer.accelerator=cpu, "
                                             "trainer.devices=1, trainer.precision=17): "),
        ("trainer.devices=0", None, None, "Lightning rejects the trainer settings (trainer.accelerator=cpu, "
                                          "trainer.devices=0,"),
    ],
)
def test_bad_input_is_one_clear_line(monkeypatch, capsys, tmp_path, override, key, value, specific):
    run_dir = tmp_path / "run"
    args = FAST + ["attn=c3", override, f"hydra.run.dir={run_dir}"]
    if override.startswith("attn="):
        args = ["-m", *FAST, override, f"hydra.sweep.dir={run_dir}"]
    code, err = run_main(monkeypatch, capsys, args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert lines[-1].startswith("error: ") and err.count("error: ") == 1, err
    if key is not None:
        assert_names_bad_setting(lines[-1], key, value)
    assert specific is None or specific in lines[-1], err
    assert "Traceback" not in err
    assert not run_dir.exists()  # no run directory left holding nothing but Hydra's files


def test_a_bad_value_in_a_run_directory_with_checkpoints_leaves_it_as_it_was(monkeypatch, capsys, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    code, _ = run_main(monkeypatch, capsys, [*FAST, "model.depth=21", f"hydra.run.dir={tmp_path}"])
    assert code == 2 and (tmp_path / "checkpoints").is_dir() and (tmp_path / "train.log").is_file()


def test_a_bad_value_leaves_an_existing_empty_run_directory_in_place(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    code, _ = run_main(monkeypatch, capsys, [*FAST, "model.depth=21", f"hydra.run.dir={run_dir}"])
    assert code == 2 and run_dir.is_dir()


def start_and_stop(args: list[str], run_dir: Path, signum: int) -> subprocess.CompletedProcess:
    """Start `python -m c3exp args`, send `signum` once its first checkpoint is written, and wait for it to end."""
    # Python raises KeyboardInterrupt only where SIGINT is not ignored (a shell's background jobs ignore it)
    run = subprocess.Popen([sys.executable, "-m", "c3exp", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert time.monotonic() < deadline and run.poll() is None, run.stderr.read()[-3000:]
        time.sleep(0.1)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=300)
    return subprocess.CompletedProcess(run.args, run.returncode, "", stderr)


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_exits_non_zero_with_its_resume_command_which_finishes_it(tmp_path, signum, status):
    run_dir = tmp_path / "run"
    args = ["experiment=quickstart", *SMALL_DIGITS, "trainer.max_epochs=60", "attn.stages=[2,3]", f"hydra.run.dir={run_dir}"]
    stopped = start_and_stop(args, run_dir, signum)
    assert stopped.returncode == status and not (run_dir / "results.json").exists()
    line = stopped.stderr.strip().splitlines()[-1]
    prefix = f"stopped by {signal.Signals(signum).name} after epoch "
    assert line.startswith(prefix) and line in (run_dir / "train.log").read_text(), stopped.stderr[-3000:]
    last, _, command = line[len(prefix):].partition(": resume with: ")
    assert int(last) >= 0  # the 0-based epoch of the newest checkpoint
    assert command == shlex.join(["python", "-m", "c3exp", *args[:-1], f"hydra.run.dir={run_dir}", "resume=auto"])
    finish = [arg.replace("trainer.max_epochs=60", f"trainer.max_epochs={int(last) + 2}") for arg in shlex.split(command)]
    resumed = subprocess.run([sys.executable, *finish[1:]], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((run_dir / "results.json").read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(int(last) + 2))  # the saved epochs, then one more


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_asking_for_a_gpu_without_one_is_one_line(monkeypatch, capsys, tmp_path):
    code, err = run_main(monkeypatch, capsys, [*FAST, "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path}"])
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("No supported gpu backend found!; without a GPU use trainer=cpu")


@pytest.mark.parametrize(
    "override, module, package",
    [
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
        ("hydra/launcher=parallel", "hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
        ("hparams_search=optuna", "optuna", "optuna"),
    ],
)
def test_a_sweep_plugin_that_is_not_installed_is_one_line_naming_the_install(monkeypatch, capsys, tmp_path, override, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # what Python sees where the package is not installed
    code, err = run_main(monkeypatch, capsys, ["-m", override, "seed=0,1", f"hydra.sweep.dir={tmp_path}"])
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {override} needs {package}") and "pip install -e '.[cluster]'" in err


def test_a_truncated_checkpoint_to_train_from_is_one_line(monkeypatch, capsys, tmp_path):
    ckpt = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(4096)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:4000])  # a copy or a kill cut it short
    code, err = run_main(monkeypatch, capsys, [*FAST, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 2 and err.startswith("error: ")
    assert_names_bad_setting(err, "ckpt_path", str(ckpt))
    assert "a c3exp/Lightning checkpoint" in err


@pytest.mark.slow
def test_more_ddp_processes_than_the_batch_divides_into_is_one_line_before_any_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", *FAST, "trainer=ddp_sim", "trainer.devices=3",
                           "data.batch_size=32", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and done.stderr.count("error:") == 1  # not once per process
    assert_names_bad_setting(last, "data.batch_size", 32)
    assert "a multiple of the 3 data-parallel processes" in last


def test_bad_input_from_a_real_shell(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", "data=cifar1000", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert_names_bad_setting(done.stderr, "data", "cifar1000")
    assert ", ".join(group_choices("data")) in done.stderr


@pytest.mark.slow
def test_missing_cifar_is_a_clear_error_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", "data=cifar10", f"data.root={tmp_path}", "data.download=false",
                           "trainer=cpu", f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cifar10 not found") and "data.root" in last and str(tmp_path) in last


@pytest.mark.slow
def test_a_training_error_is_the_only_line_on_stderr(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "c3exp", "data=digits", "trainer=cpu", "attn=c3", "attn.options.reduction=0",
         f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr
    assert_names_bad_setting(done.stderr, "attn.options.reduction", 0)


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories(tmp_path):
    cmd = [sys.executable, "-m", "c3exp", *FAST, "task_name=collide"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    runs = list(Path(tmp_path, "outputs", "collide", "runs").iterdir())
    assert len(runs) == 2 and runs[0].name != runs[1].name
    for run in runs:  # the pattern `c3exp train --help` shows
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-p\d+_resnet20-none-digits-s0", run.name), run.name


def test_cfg_job_prints_the_composed_config(tmp_path):
    """`--cfg job` is Hydra's "show me the config": it prints it and trains nothing."""
    done = subprocess.run([sys.executable, "-m", "c3exp", "--cfg", "job", "model=resnet56", "attn=c3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "depth: 56" in done.stdout and "name: c3" in done.stdout
    assert not (tmp_path / "outputs").exists()


CONFIG_ONLY = [["train", "--help"], ["--cfg", "job", "attn=c3"], ["data=cifar1000"], ["optim.optimizer.lr=-1", "data=digits"],
               ["optim.lr=1"]]


@pytest.mark.parametrize("args", CONFIG_ONLY, ids=" ".join)
def test_config_questions_are_answered_without_importing_torch_or_lightning(tmp_path, args):
    """Help, --cfg and bad values must not wait seconds for torch and Lightning to import (BENCHMARKS: CLI latency)."""
    probe = ("import sys; sys.argv = ['c3exp', *sys.argv[1:]]\n"
             "from c3exp.cli import main\n"
             "try:\n    main()\n"
             "finally:\n    print('heavy:', sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "heavy: []", done.stdout[-500:] + done.stderr[-2000:]


def test_help_is_c3exps_own_page_with_every_group_and_its_choices_and_the_run_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", "train", "--help", "experiment=quickstart", "seed=3"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("c3exp: channel attention") and "powered by Hydra" not in done.stdout
    listed = dict(line.split(": ", 1) for line in done.stdout.splitlines() if re.fullmatch(r"[\w/]+: [\w, ]+", line))
    for group in GROUPS:
        assert listed[group].split(", ") == group_choices(group), group
    assert "c3exp train -m " in done.stdout and "c3exp report " in done.stdout
    assert "bench" not in listed  # the bench's settings are its own config, not a training group
    # the run folder this command line would write: the pattern of conf/hydra/default.yaml, with its values
    run_dir = r"outputs/quickstart/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}-p\d+_resnet20-c3-digits-s3/"
    assert re.search(f"run folder, were it started now: {run_dir}\n", done.stdout), done.stdout[-600:]


def test_a_failed_sweep_job_ends_the_sweep_with_its_one_line_and_status_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", "-m", *FAST, "optim.optimizer.lr=-1,-2", f"hydra.sweep.dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job 0: ")
    assert_names_bad_setting(last, "optim.optimizer.lr", -1)
    assert "HYDRA_FULL_ERROR" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_run_prints_no_library_advertisements_or_expected_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "c3exp", *FAST, f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout + done.stderr
    for noise in ("💡 Tip", "LeafSpec", "smaller than the logging interval", "`srun` command is available"):
        assert noise not in printed, noise
    assert printed.count("GPU available: False") == 1  # Lightning's lines once, through Hydra's handlers
    assert "GPU available: False" in (tmp_path / "train.log").read_text()
