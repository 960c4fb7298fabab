"""`c3exp report` (c3exp/cli/report.py): Table 1 and curves from a real (tiny) sweep, from its directory or
from W&B, and its one-line errors."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from c3exp.cli.report import main as report
from c3exp.report.runs import collect_runs
from c3exp.report.tables import TABLE_SPECS, Cell
from c3exp.results import RESULTS_FILE
from c3exp.training.train import train
from tests.conftest import TINY_DIGITS, assert_names_bad_setting, error_line, rows_by_attn as read_csv, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


ATTNS = ("none", "c3")


SEEDS = (0, 1)


TINY_RUN = TINY_DIGITS + ["model=resnet20", "trainer.max_epochs=2", "data.batch_size=8", "trainer.limit_train_batches=3",
                          "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real sweep laid out as Hydra's multirun writes it: resnet20 x (none, c3) x 2 seeds."""
    root = tmp_path_factory.mktemp("sweep")
    jobs = [(attn, seed) for attn in ATTNS for seed in SEEDS]
    for number, (attn, seed) in enumerate(jobs):
        train(run_config(TINY_RUN + [f"attn={attn}", f"seed={seed}"], root / f"{number}_resnet20-{attn}-digits-s{seed}"))
    return root


def results_by_attn(root: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in root.rglob(RESULTS_FILE):
        results = json.loads(path.read_text())
        found.setdefault(results["attn"], []).append(results)
    return found


@pytest.fixture(scope="module")
def written(sweep, tmp_path_factory) -> dict[str, Path]:
    return report([str(sweep), f"out={tmp_path_factory.mktemp('report')}"])


def test_table_means_and_stds_match_the_runs_results(sweep, written):
    rows = read_csv(written["csv"])
    markdown = written["markdown"].read_text()
    by_attn = results_by_attn(sweep)
    means = {}
    for attn, runs in by_attn.items():
        top1 = 100 * np.array([run["test_acc1"] for run in runs])
        means[attn] = top1.mean()
        row = rows[attn]
        assert (row["model"], row["data"], int(row["seeds"])) == ("resnet20", "digits", len(SEEDS))
        assert float(row["top1_mean"]) == pytest.approx(top1.mean(), abs=1e-9)
        assert float(row["top1_std"]) == pytest.approx(top1.std(ddof=1), abs=1e-9)
        assert float(row["params_m"]) == pytest.approx(runs[0]["params"] / 1e6)
        assert float(row["macs_m"]) == pytest.approx(runs[0]["macs"] / 1e6)
        assert row["paper_top1"] == ""  # digits: no paper cell
        assert f"{top1.mean():.2f} ± {top1.std(ddof=1):.2f}" in markdown
    best = max(means, key=means.get)
    assert {attn for attn, row in rows.items() if row["best_in_row"] == "True"} >= {best}
    assert f"**{means[best]:.2f} ± " in markdown


def test_curve_plot_is_written_next_to_the_report(written):
    curves = written["markdown"].parent / "curves_resnet20_digits.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and curves.stat().st_size > 10_000
    assert "](curves_resnet20_digits.png)" in written["markdown"].read_text()


def test_one_seed_has_no_std(sweep, tmp_path):
    shutil.copytree(next(sweep.glob("0_*")), tmp_path / "only")
    written = report([str(tmp_path)])
    assert written["markdown"].parent == tmp_path
    assert read_csv(written["csv"])["none"]["top1_std"] == ""
    assert " ± -**" in written["markdown"].read_text()  # the only cell of its row is also the best


def test_cifar100_cells_carry_the_papers_values(sweep):
    run = dataclasses.replace(collect_runs(sweep)[0], data="cifar100")
    columns = TABLE_SPECS["classification"].columns  # params, MACs, top-1
    cell = Cell(run.model, run.data, run.attn, (run,), TABLE_SPECS["classification"])
    paper = tuple(cell.paper_value(column) for column in columns)
    assert paper == {"none": (0.28, 41.7, 67.73), "c3": (0.35, 46.0, 69.34)}[run.attn]
    digits = Cell(run.model, "digits", run.attn, (run,), TABLE_SPECS["classification"])
    assert [digits.paper_value(column) for column in columns] == [None] * 3


# -- W&B: the same runs, as the W&B API would return them ---------------------------------------------


def wandb_run(results: dict) -> SimpleNamespace:
    """A run of wandb.Api().runs(): the logged (nested) config, the summary and history rows."""
    config = {
        "model": {"name": results["model"]},
        "attn": {"name": results["attn"], "placement": results["placement"]},
        "data": {"name": results["data"], "batch_size": results["batch_size"]},
        "optim": {"name": results["optim"], "optimizer": {"lr": results["lr"]}},
        "trainer": {"max_epochs": results["max_epochs"]},
        "seed": results["seed"],
    }
    summary = {"final/test_acc1": results["test_acc1"], "model/params": results["params"], "model/macs": results["macs"]}
    rows = [{"epoch": row["epoch"], "val/acc1": row["val/acc1"]} for row in results["history"]]
    rows.insert(0, {"epoch": 0, "val/acc1": None})  # a training-step row
    history = lambda keys, pandas: rows  # noqa: E731
    return SimpleNamespace(config=config, summary=summary, history=history, url=f"https://wandb.ai/run/{results['seed']}")


class FakeApi:
    """Stands in for wandb.Api: serves the sweep's runs plus one unfinished run."""

    runs_by_project: dict[str, list[SimpleNamespace]] = {}

    def runs(self, path: str) -> list[SimpleNamespace]:
        if path not in self.runs_by_project:
            raise ValueError(f"Could not find project {path}")
        return self.runs_by_project[path]


def test_wandb_project_gives_the_same_table(sweep, written, tmp_path, monkeypatch):
    import wandb

    runs = [wandb_run(results) for group in results_by_attn(sweep).values() for results in group]
    crashed = SimpleNamespace(config={"model": {"name": "resnet20"}}, summary={}, history=None, url="crashed")
    monkeypatch.setattr(FakeApi, "runs_by_project", {"me/c3exp": [*runs, crashed]})
    monkeypatch.setattr(wandb, "Api", FakeApi)
    from_wandb = report(["wandb=me/c3exp", f"out={tmp_path}"])
    ours, theirs = read_csv(written["csv"]), read_csv(from_wandb["csv"])
    for attn in ATTNS:
        assert {k: v for k, v in theirs[attn].items() if k != "runs"} == {k: v for k, v in ours[attn].items() if k != "runs"}
    assert "4 runs from W&B me/c3exp" in from_wandb["markdown"].read_text()
    assert (tmp_path / "curves_resnet20_digits.png").is_file()


@pytest.mark.parametrize(
    ("argv", "key", "value", "specific"),
    [
        (["/no/such/dir"], "source", "/no/such/dir", "an existing directory"),
        ([], "source", None, "a runs directory, wandb=ENTITY/PROJECT, or both"),
        (["out=x"], "source", None, None),
        (["source=.", "include_debug=sometimes"], "include_debug", "sometimes", None),
        (["wandb=no-slash"], "wandb", "no-slash", "ENTITY/PROJECT"),
        (["wandb=me/elsewhere"], "wandb", "me/elsewhere", "a W&B project you can read"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(argv, key, value, specific, capsys, monkeypatch):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    line = error_line(lambda: report(argv), capsys)
    assert_names_bad_setting(line, key, value)
    assert specific is None or specific in line


def test_a_directory_without_runs_is_a_user_error(tmp_path, capsys):
    err = error_line(lambda: report([str(tmp_path)]), capsys)
    assert "expected a source with at least one finished run (results.json)" in err
