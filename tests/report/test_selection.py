"""Which runs a report pools (c3exp/report/tables.py), over a real outputs/ folder: debug runs and re-runs of a
seed do not count, and only seeds are pooled, never runs of other settings."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import c3exp.report.output
from c3exp.analysis.plots import Band
from c3exp.cli.report import main as report
from c3exp.report.runs import run_from_wandb
from tests.conftest import error_line, rows_by_attn as read_csv
from tests.report.conftest import rows_by_cell, write_hydra_run


DEBUG_FAST = {"task_name": "debug", "trainer": {"fast_dev_run": True, "overfit_batches": 0.0, "max_epochs": 160}}


DEBUG_OVERFIT = {"task_name": "debug", "trainer": {"fast_dev_run": False, "overfit_batches": 3, "max_epochs": 40}}


def write_run(run_dir: Path, attn: str, seed: int, acc: float, config: dict | None = None, age: float = 0.0) -> Path:
    """A run directory as the CLI leaves it: results.json, and Hydra's .hydra/config.yaml (`age` s old)."""
    trainer = {"fast_dev_run": False, "overfit_batches": 0.0}
    config = {"task_name": "train", "seed": seed, "trainer": trainer, **(config or {})}
    history = [{"epoch": 0, "val/acc1": acc / 2}, {"epoch": 1, "val/acc1": acc}]
    results = {"model": "resnet20", "attn": attn, "data": "digits", "seed": seed, "params": 1000, "macs": 2000,
               "max_epochs": 2, "test_acc1": acc, "history": history}
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    path = run_dir / "results.json"
    path.write_text(json.dumps(results))
    when = 1_700_000_000 - age
    os.utime(path, (when, when))
    return run_dir


@pytest.fixture
def walkthrough(tmp_path) -> Path:
    """The user's outputs/: a quickstart, a debug=fast and a debug=overfit run, then a 2-seed sweep."""
    runs = tmp_path / "outputs"
    write_run(runs / "quickstart" / "runs" / "a_c3", "c3", 0, 0.60, {"task_name": "quickstart"}, age=300)
    write_run(runs / "debug" / "runs" / "b_c3", "c3", 0, 0.09, DEBUG_FAST, age=200)
    write_run(runs / "debug" / "runs" / "c_none", "none", 0, 1.00, DEBUG_OVERFIT, age=100)
    for seed, acc in ((0, 0.90), (1, 0.94)):
        write_run(runs / "train" / "multiruns" / "d" / f"{seed}_c3", "c3", seed, acc)
        write_run(runs / "train" / "multiruns" / "d" / f"{seed + 2}_none", "none", seed, acc - 0.1)
    return runs


def test_debug_runs_are_skipped_and_seeds_are_distinct(walkthrough, tmp_path):
    written = report([str(walkthrough), f"out={tmp_path / 'report'}"])
    rows, markdown = read_csv(written["csv"]), written["markdown"].read_text()
    for attn, top1 in (("c3", [90.0, 94.0]), ("none", [80.0, 84.0])):
        assert int(rows[attn]["seeds"]) == 2
        assert float(rows[attn]["top1_mean"]) == pytest.approx(statistics.fmean(top1))
        assert float(rows[attn]["top1_std"]) == pytest.approx(statistics.stdev(top1))
        assert all(Path(run).parent.name == "d" for run in rows[attn]["runs"].split(";"))  # the sweep's
    notes = [line for line in markdown.splitlines() if line.startswith("- ")]
    assert notes == [
        "- Skipped 2 debug runs (1 trainer.fast_dev_run, 1 trainer.overfit_batches); include_debug=true reports them.",
        f"- resnet20 / digits / c3: 2 runs with seed 0; kept the most recent ({walkthrough}/train/multiruns/d/0_c3), "
        "left out 1.",
    ]
    assert "4 runs from" in markdown


def test_include_debug_reports_them_one_run_per_seed(walkthrough, tmp_path):
    """A debug run is reported in a cell of its own, labelled by the settings that differ; never pooled."""
    write_run(walkthrough / "debug" / "runs" / "e_se", "se", 0, 0.50, DEBUG_FAST, age=50)
    written = report([str(walkthrough), f"out={tmp_path / 'report'}", "include_debug=true"])
    rows, markdown = rows_by_cell(written["csv"]), written["markdown"].read_text()
    sweep_c3 = "c3 (trainer.fast_dev_run=false, trainer.max_epochs=unset)"
    cells = {name: (int(row["seeds"]), float(row["top1_mean"])) for name, row in rows.items()}
    assert cells == {sweep_c3: (2, pytest.approx(92.0)),  # the sweep's seeds, not the 9% fast_dev_run
                     "c3 (trainer.fast_dev_run=true, trainer.max_epochs=160)": (1, pytest.approx(9.0)),
                     "none (trainer.max_epochs=unset, trainer.overfit_batches=0.0)": (2, pytest.approx(82.0)),
                     "none (trainer.max_epochs=40, trainer.overfit_batches=3)": (1, pytest.approx(100.0)),
                     "se": (1, pytest.approx(50.0))}
    assert "Skipped" not in markdown and "left out 1 run whose settings differ" not in markdown
    assert f"resnet20 / digits / {sweep_c3}: 2 runs with seed 0" in markdown  # the quickstart run: a re-run of seed 0


def test_curve_n_is_the_number_of_seeds(walkthrough, tmp_path, monkeypatch):
    drawn: dict[str, Band] = {}

    def record(bands, title, path, ylabel):
        drawn.update(bands)
        Path(path).write_bytes(b"a PNG")
        return Path(path)

    monkeypatch.setattr(c3exp.report.output, "accuracy_curves", record)
    report([str(walkthrough), f"out={tmp_path / 'report'}"])
    assert {attn: band.runs for attn, band in drawn.items()} == {"c3": 2, "none": 2}
    np.testing.assert_allclose(drawn["c3"].mean, [46.0, 92.0])


def test_only_debug_runs_is_a_user_error(tmp_path, capsys):
    write_run(tmp_path / "fast", "c3", 0, 0.09, DEBUG_FAST)
    err = error_line(lambda: report([str(tmp_path)]), capsys)
    assert "not a debug run (skipped 1 debug run; include_debug=true reports them)" in err


def test_wandb_debug_runs_are_marked_from_their_config():
    def wandb_run(config: dict) -> SimpleNamespace:
        config = {"model": {"name": "resnet20"}, "attn": {"name": "c3"}, "data": {"name": "digits"}, **config}
        return SimpleNamespace(config=config, summary={"final/test_acc1": 0.5}, history=lambda keys, pandas: [],
                               url="run", created_at="2026-01-02T03:04:05Z")

    assert run_from_wandb(wandb_run(DEBUG_FAST)).debug == "trainer.fast_dev_run"
    assert run_from_wandb(wandb_run({"trainer.overfit_batches": 3})).debug == "trainer.overfit_batches"
    normal = run_from_wandb(wandb_run({"task_name": "train"}))
    assert normal.debug is None and normal.finished == pytest.approx(1767323045.0)


@pytest.mark.slow
def test_a_real_fast_dev_run_is_recognised(walkthrough, tmp_path):
    """The marker the CLI really leaves: `debug=fast` records max_epochs 160 in results.json but one step ran."""
    run_dir = walkthrough / "debug" / "runs" / "real_fast"
    done = subprocess.run([sys.executable, "-m", "c3exp", "debug=fast", "data=digits", "attn=se", "trainer=cpu",
                           "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    written = report([str(walkthrough), f"out={tmp_path / 'report'}"])
    assert "Skipped 3 debug runs (2 trainer.fast_dev_run, 1 trainer.overfit_batches)" in written["markdown"].read_text()
    assert set(read_csv(written["csv"])) == {"none", "c3"}  # the only SE run was the debug one


# -- only seeds are pooled: runs of other settings are never averaged into one cell ----------------------------


def full_config(seed: int, **trainer: object) -> dict:
    """A run's saved config, the settings a report must not pool over: the trainer's, data's, optimizer's."""
    return {
        "model": {"name": "resnet20", "depth": 20, "width": 1},
        "attn": {"name": "c3", "placement": "every_block", "options": {}},
        "data": {"name": "digits", "batch_size": 32, "num_workers": 0, "seed": "${seed}"},
        "optim": {"name": "paper", "optimizer": {"lr": 0.1, "weight_decay": 0.0001},
                  "scheduler": {"milestones": [120, 140]}},
        "trainer": {"fast_dev_run": False, "overfit_batches": 0.0, "max_epochs": 2, "limit_train_batches": None,
                    "devices": 1, "enable_progress_bar": True, **trainer},
        "run_name": f"resnet20-c3-digits-s{seed}",
        "logger": {"csv": {"save_dir": "${output_dir}"}},
    }


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict) and value
        out[key] = merged(out[key], value) if nested else value
    return out


def dotted_path(setting: dict) -> list[str]:
    """['trainer', 'max_epochs'] of {'trainer': {'max_epochs': 160}}: the path to the single leaf."""
    key, value = next(iter(setting.items()))
    return [key, *dotted_path(value)] if isinstance(value, dict) and value else [key]


def test_a_short_run_is_not_averaged_with_a_full_run_as_a_seed(tmp_path, capsys):
    """A limit_train_batches=10 run and a full run of one config: a cell of each, never '53.06 ± 62.44'."""
    runs = tmp_path / "runs"
    write_run(runs / "short", "c3", 1, 0.0891, full_config(1, limit_train_batches=10), age=100)
    write_run(runs / "full", "c3", 0, 0.9721, full_config(0))
    written = report([str(runs), f"out={tmp_path / 'report'}"])
    rows, markdown = rows_by_cell(written["csv"]), written["markdown"].read_text()
    cells = {name: (int(row["seeds"]), row["runs"], float(row["top1_mean"]), row["top1_std"])
             for name, row in rows.items()}
    assert cells == {"c3 (trainer.limit_train_batches=10)": (1, str(runs / "short"), pytest.approx(8.91), ""),
                     "c3 (trainer.limit_train_batches=null)": (1, str(runs / "full"), pytest.approx(97.21), "")}
    assert "53.06" not in markdown and "62.44" not in markdown
    note = ("- resnet20 / digits: trainer.limit_train_batches=10 (c3 (trainer.limit_train_batches=10)); "
            "trainer.limit_train_batches=null (c3 (trainer.limit_train_batches=null))")
    assert note in markdown.splitlines() and note in capsys.readouterr().out.splitlines()


def leaf(config: dict, setting: dict) -> str:
    """The value `config` has at the one leaf of `setting`, as a cell's label shows it ('unset' where none)."""
    for key in dotted_path(setting):
        if key not in config:
            return "unset"
        config = config[key]
    return config if isinstance(config, str) else json.dumps(config)


@pytest.mark.parametrize("setting", [
    {"trainer": {"max_epochs": 160}}, {"trainer": {"limit_val_batches": 2}}, {"data": {"batch_size": 128}},
    {"data": {"train_repeats": 1}}, {"optim": {"optimizer": {"lr": 0.05}}},
    {"optim": {"optimizer": {"weight_decay": 0.0005}}}, {"optim": {"scheduler": {"milestones": [1]}}},
    {"attn": {"placement": "last_block"}}, {"attn": {"options": {"fold_messages": False}}}, {"model": {"width": 2}},
], ids=lambda setting: ".".join(dotted_path(setting)))
def test_runs_of_any_other_setting_get_a_cell_of_their_own(tmp_path, setting):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_run(runs / f"s{seed}", "c3", seed, 0.90 + seed / 100, full_config(seed))
    write_run(runs / "other", "c3", 2, 0.10, merged(full_config(2), setting))
    written = report([str(runs), f"out={tmp_path / 'report'}"])
    rows, markdown = rows_by_cell(written["csv"]), written["markdown"].read_text()
    key = ".".join(dotted_path(setting))
    ours, other = f"c3 ({key}={leaf(full_config(0), setting)})", f"c3 ({key}={leaf(setting, setting)})"
    assert {name: (int(row["seeds"]), float(row["top1_mean"])) for name, row in rows.items()} == {
        ours: (2, pytest.approx(90.5)), other: (1, pytest.approx(10.0))}
    assert f"{ours} top-1 (%)" in markdown and "left out" not in markdown


def test_genuine_seeds_are_pooled_whatever_their_paths_loggers_and_workers(tmp_path):
    """Only the seed and settings that cannot change the numbers differ: one cell, mean ± sample std."""
    runs = tmp_path / "runs"
    for seed, acc in ((0, 0.90), (1, 0.94), (2, 0.95)):
        config = merged(full_config(seed), {
            "output_dir": f"/scratch/{seed}", "task_name": f"sweep{seed}",
            "data": {"num_workers": 4 * seed, "seed": seed},  # the seed as a resolved config (W&B's) holds it
            "trainer": {"devices": 1 + seed, "enable_progress_bar": seed == 0, "default_root_dir": f"/scratch/{seed}"},
            "logger": {"wandb": {"name": f"run{seed}"}} if seed else {"csv": {"save_dir": "/x"}},
            "callbacks": {"epoch_seed": {"seed": seed},
                          "model_checkpoint": {"dirpath": f"/scratch/{seed}/checkpoints"}},
        })
        write_run(runs / f"s{seed}", "c3", seed, acc, config)
    written = report([str(runs), f"out={tmp_path / 'report'}"])
    row, markdown = read_csv(written["csv"])["c3"], written["markdown"].read_text()
    top1 = [90.0, 94.0, 95.0]
    assert int(row["seeds"]) == 3 and len(row["runs"].split(";")) == 3
    assert float(row["top1_mean"]) == pytest.approx(statistics.fmean(top1))
    assert float(row["top1_std"]) == pytest.approx(statistics.stdev(top1))
    assert f"**{statistics.fmean(top1):.2f} ± {statistics.stdev(top1):.2f}**" in markdown
    assert "left out" not in markdown


# -- what a sweep varies labels its cells --------------------------------------------------------------------------


def test_a_sweep_over_c3s_locations_gives_a_labelled_cell_per_location(tmp_path):
    """`-m experiment=quickstart attn=none,c3 'attn.stages=[1],[4]' seed=0,1`: a cell per (block, location), each
    over its 2 seeds. The baseline's runs differ in attn.stages too: they are not 4 seeds of one cell."""
    sweep = tmp_path / "multiruns" / "stamp"
    accuracies = {("none", "[1]"): (0.60, 0.62), ("none", "[4]"): (0.61, 0.61), ("c3", "[1]"): (0.64, 0.70),
                  ("c3", "[4]"): (0.71, 0.75)}
    for number, ((attn, stages), pair) in enumerate(accuracies.items()):
        for seed, acc in enumerate(pair):
            overrides = ["experiment=quickstart", f"attn={attn}", f"attn.stages={stages}", f"seed={seed}"]
            write_hydra_run(sweep / f"{2 * number + seed}_resnet20-{attn}-digits-s{seed}", overrides, acc)
    written = report([str(sweep), f"out={tmp_path / 'report'}"])
    rows, markdown = rows_by_cell(written["csv"]), written["markdown"].read_text()
    # means and sample stds of (60, 62), (61, 61), (64, 70), (71, 75): 61 ± 1.41, 61 ± 0, 67 ± 4.24, 73 ± 2.83
    assert {name: (int(row["seeds"]), row["top1_mean"], row["top1_std"][:5]) for name, row in rows.items()} == {
        "none (attn.stages=[1])": (2, "61.0", "1.414"), "none (attn.stages=[4])": (2, "61.0", "0.0"),
        "c3 (attn.stages=[1])": (2, "67.0", "4.242"), "c3 (attn.stages=[4])": (2, "73.0", "2.828")}
    assert [name for name, row in rows.items() if row["best_in_row"] == "True"] == ["c3 (attn.stages=[4])"]
    headers = [text.strip() for text in next(line for line in markdown.splitlines() if line.startswith("| model"))
               .strip("|").split("|")]
    assert [header for header in headers if header.endswith("top-1 (%)")] == [
        "none (attn.stages=[1]) top-1 (%)", "none (attn.stages=[4]) top-1 (%)", "c3 (attn.stages=[1]) top-1 (%)",
        "c3 (attn.stages=[4]) top-1 (%)"]
    assert "**73.00 ± 2.83**" in markdown and "Recipe: experiment=quickstart." in markdown
    assert "left out" not in markdown and "budgets" not in markdown
