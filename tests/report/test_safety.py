"""A report over files anyone can write (c3exp/report): it writes only inside its folder, never through a
symlink, and a damaged or empty run is skipped with one line naming its file instead of ending the report."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from c3exp.cli.report import main as report
from c3exp.report.output import NAME_LIMIT, safe_name
from c3exp.report.runs import run_from_wandb
from tests.conftest import assert_names_bad_setting, rows_by_attn as read_csv

REPORT_FILE = re.compile(r"report\.(md|csv)|curves_[^/]+\.png")  # all a report may add to its folder


def results(attn: str = "c3", seed: int = 0, **changes: object) -> dict:
    """A trained run's results.json, as train.py writes it (2 epochs, validated each)."""
    history = [{"epoch": 0, "val/acc1": 0.4}, {"epoch": 1, "val/acc1": 0.8}]
    return {"model": "resnet20", "attn": attn, "data": "digits", "seed": seed, "params": 1000, "macs": 2000,
            "max_epochs": 2, "epochs": 2, "best_epoch": 1, "best_val_acc1": 0.8, "test_acc1": 0.8,
            "test_ckpt": "best", "history": history, **changes}


def write_run(run_dir: Path, content: dict | bytes) -> Path:
    """A run folder with its results.json: a record as json.dumps writes it (NaN included), or raw bytes."""
    run_dir.mkdir(parents=True)
    path = run_dir / "results.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def snapshot(root: Path) -> dict[Path, object]:
    """Everything under `root`: a file's bytes, a symlink's target, a folder's name."""
    def state(path: Path) -> object:
        if path.is_symlink():
            return ("symlink", str(path.readlink()))
        return "folder" if path.is_dir() else path.read_bytes()
    return {path: state(path) for path in root.rglob("*")}


def changes(before: dict[Path, object], after: dict[Path, object]) -> set[Path]:
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def assert_only_report_files_changed(before: dict[Path, object], after: dict[Path, object], out: Path) -> None:
    """Every change is report.md, report.csv or a curve PNG directly in `out`: nothing outside, no folders."""
    for path in changes(before, after):
        assert path.parent == out and REPORT_FILE.fullmatch(path.name), path
        assert path.is_file() and not path.is_symlink(), path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """outputs/sweep with one good run; the tests add runs that attack or are damaged."""
    out = tmp_path / "outputs" / "sweep"
    write_run(out / "good", results())
    return out


# -- names from files cannot leave the report's folder ------------------------------------------------------


@pytest.mark.parametrize("model", ["../../victim", "x/../../../victim"])
def test_a_model_name_with_dot_dot_writes_nothing_outside(sweep, tmp_path, model, capsys):
    victim = tmp_path / "victim_digits.png"  # where x/../../../victim's curve lands without sanitising
    victim.write_bytes(b"precious")
    write_run(sweep / "attack", results(model=model))
    before = snapshot(tmp_path)
    written = report([str(sweep)])
    after = snapshot(tmp_path)
    assert victim.read_bytes() == b"precious"
    assert_only_report_files_changed(before, after, sweep)
    assert {path.parent for path in written.values()} == {sweep}
    assert {row["model"] for row in csv.DictReader(written["csv"].open())} == {"resnet20", model}
    assert len(list(sweep.glob("curves_*.png"))) == 2


def test_a_wandb_model_name_with_dot_dot_writes_nothing_outside(tmp_path, monkeypatch, capsys):
    import wandb

    out = tmp_path / "outputs" / "report"
    out.mkdir(parents=True)
    victim = tmp_path / "victim_digits.png"
    victim.write_bytes(b"precious")
    config = {"model": {"name": "x/../../../victim"}, "attn": {"name": "c3"}, "data": {"name": "digits"}, "seed": 0}
    run = SimpleNamespace(config=config, summary={"final/test_acc1": 0.5, "final/epochs": 1}, url="u",
                          history=lambda keys, pandas: [{"epoch": 0, "val/acc1": 0.5}])
    monkeypatch.setattr(wandb, "Api", lambda: SimpleNamespace(runs=lambda project: [run]))
    before = snapshot(tmp_path)
    report(["wandb=me/project", f"out={out}"])
    assert victim.read_bytes() == b"precious"
    assert_only_report_files_changed(before, snapshot(tmp_path), out)


@pytest.mark.parametrize("name", ["../../victim", "a/b", "..", ".hidden", "a\\..\\b", "x" * 300, "", "\0/\n"])
def test_safe_names_have_no_folders_dots_or_length(name):
    safe = safe_name(name)
    assert "/" not in safe and "\\" not in safe and ".." not in safe and "\0" not in safe
    assert not safe.startswith(".") and 0 < len(safe) <= NAME_LIMIT


def test_names_that_sanitise_alike_keep_their_own_curves(sweep, capsys):
    write_run(sweep / "slash", results(model="resnet/20"))
    write_run(sweep / "dash", results(model="resnet-20"))
    written = report([str(sweep)])
    assert len({path for key, path in written.items() if key.startswith("curves_")}) == 3


# -- symlinks already in the folder are replaced, not written through -----------------------------------------


def test_planted_symlinks_are_replaced_not_followed(sweep, tmp_path, capsys):
    outside = {name: tmp_path / f"outside_{name}" for name in ("report.md", "report.csv", "curves_resnet20_digits.png")}
    for name, target in outside.items():
        target.write_bytes(b"keep me")
        (sweep / name).symlink_to(target)
    before = snapshot(tmp_path)
    report([str(sweep)])
    assert all(target.read_bytes() == b"keep me" for target in outside.values())
    for name in outside:
        assert (sweep / name).is_file() and not (sweep / name).is_symlink()
    assert "resnet20" in (sweep / "report.md").read_text()
    assert_only_report_files_changed(before, snapshot(tmp_path), sweep)


# -- a damaged run is one line on stderr; the report goes on -----------------------------------------------------


GOOD = json.dumps(results(attn="se")).encode()
DAMAGED = {
    "truncated": (GOOD[: len(GOOD) // 2], "not valid JSON (line 1)"),
    "empty": (b"", "empty"),
    "not_utf8": (b'{"model": "resnet\xff20"}', "not UTF-8 text (byte 17)"),
    "a_list": (b"[1, 2, 3]", "a JSON list, not an object"),
    "string_metric": (results(attn="se", test_acc1="0.9"), 'test_acc1 is "0.9", not a number'),
    "nan_metric": (results(attn="se", test_acc1=float("nan")), "test_acc1 is NaN, not a number"),
    "string_params": (results(attn="se", params="1M"), 'params is "1M", not a number'),
    "history_object": (results(attn="se", history={"epoch": 0}), 'history is {"epoch": 0}, not a list of objects'),
    "string_curve": (results(attn="se", history=[{"epoch": 0, "val/acc1": "high"}]),
                     'history[0].val/acc1 is "high", not a number'),
    "no_model": ({key: value for key, value in results(attn="se").items() if key != "model"},
                 "model is missing, not a model name"),
}


def test_each_damaged_results_json_is_one_line_and_the_report_goes_on(sweep):
    paths = {kind: write_run(sweep / kind, content) for kind, (content, _) in DAMAGED.items()}
    done = subprocess.run([sys.executable, "-m", "c3exp.report", str(sweep)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == sorted(f"skipped {paths[kind]}: {why}"
                                                      for kind, (_, why) in DAMAGED.items())
    assert set(read_csv(sweep / "report.csv")) == {"c3"}  # the good run alone; every damaged one was an SE run
    assert "\n1 run from " in (sweep / "report.md").read_text()


# -- runs without a result are not results --------------------------------------------------------------------


def test_a_zero_epoch_run_is_not_in_the_table(sweep, capsys):
    """trainer.limit_train_batches=0: tested untrained, no best epoch; its test accuracy is no result."""
    untrained = {key: value for key, value in results(attn="se", test_acc1=0.95).items()
                 if key not in ("best_epoch", "best_val_acc1")}
    path = write_run(sweep / "untrained", {**untrained, "epochs": 0, "history": []})
    written = report([str(sweep)])
    assert set(read_csv(written["csv"])) == {"c3"}
    markdown = written["markdown"].read_text()
    assert "95.00" not in markdown and "se top-1" not in markdown and "\n1 run from " in markdown
    assert capsys.readouterr().err == f"skipped {path}: no trained epoch (epochs: 0), so no result to report\n"


def test_only_damaged_runs_is_a_user_error(tmp_path, capsys):
    write_run(tmp_path / "empty", b"")
    with pytest.raises(SystemExit) as stop:
        report([str(tmp_path)])
    skipped, error = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and skipped == f"skipped {tmp_path / 'empty' / 'results.json'}: empty"
    assert error.startswith("error: ") and "at least one finished run (results.json)" in error
    assert_names_bad_setting(error, "source", str(tmp_path))


def test_a_wandb_run_without_a_trained_epoch_or_with_a_string_metric_is_skipped(capsys):
    config = {"model": {"name": "resnet20"}, "attn": {"name": "c3"}, "data": {"name": "digits"}, "seed": 0}
    for summary in ({"final/test_acc1": 0.5, "final/epochs": 0}, {"final/test_acc1": "0.5", "final/epochs": 2}):
        run = SimpleNamespace(config=config, summary=summary, history=lambda keys, pandas: [], url="https://w/1")
        assert run_from_wandb(run) is None
    assert capsys.readouterr().err.splitlines() == [
        "skipped https://w/1: no trained epoch (epochs: 0), so no result to report",
        'skipped https://w/1: test_acc1 is "0.5", not a number',
    ]
