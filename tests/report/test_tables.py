"""A report's cells and rows (c3exp/report/tables.py): runs of two recipes (experiments) are two column groups of
one table and never one cell; the paper's figures stand beside the paper's recipe only."""
from __future__ import annotations

from pathlib import Path

import pytest

from c3exp.cli.report import main as report
from tests.report.conftest import rows_by_cell, write_hydra_run

# (experiment, attn) -> test top-1 of seeds 0, 1, 2: the strong recipe has two seeds, the paper's three
TOP1 = {("paper_cifar100", "none"): (0.68, 0.69, 0.70), ("paper_cifar100", "c3"): (0.70, 0.71, 0.72),
        ("strong_cifar100", "none"): (0.72, 0.73), ("strong_cifar100", "c3"): (0.74, 0.76)}
# conf/experiment has no strong_cifar100 yet: its runs are the paper's config with some of the strong recipe's
# settings, of keys conf/ already had before the recipe (its own keys are being added)
STRONG = ["optim.optimizer.nesterov=true", "optim.optimizer.weight_decay=5e-4", "trainer.max_epochs=200"]


@pytest.fixture
def two_recipes(tmp_path) -> Path:
    """outputs/ after `-m experiment=paper_cifar100 attn=none,c3 seed=0,1,2` and the strong recipe's seeds 0, 1."""
    for (experiment, attn), top1 in TOP1.items():
        for seed, acc in enumerate(top1):
            overrides = ["experiment=paper_cifar100", f"attn={attn}", f"seed={seed}"]
            overrides += STRONG if experiment == "strong_cifar100" else []
            write_hydra_run(tmp_path / "outputs" / experiment / f"{attn}_s{seed}", overrides, acc, experiment)
    return tmp_path / "outputs"


def test_two_recipes_are_two_column_groups_never_pooled(two_recipes, tmp_path):
    """Each cell's n and mean are its own recipe's: paper c3 (70, 71, 72) 71 ± 1 over 3 seeds, strong c3 (74, 76)
    75 ± 1.41 over 2, never the 72.60 of all five; paper none 69 ± 1, strong none 72.5 ± 0.71."""
    written = report([str(two_recipes), f"out={tmp_path / 'report'}"])
    markdown = written["markdown"].read_text()
    lines = [[text.strip() for text in line.strip("|").split("|")] for line in markdown.splitlines()
             if line.startswith("|")]
    groups = [f"{recipe} {header}" for recipe in ("paper_cifar100", "strong_cifar100")
              for header in ("params (M)", "MACs (M)", "top-1 (%)", "seeds")]
    assert lines[0] == ["model", "data", "attn", *groups]
    cells = {line[2]: dict(zip(lines[0], line)) for line in lines[2:]}
    assert list(cells) == ["none", "c3"]
    assert {attn: [cell[f"{recipe} {header}"] for recipe in ("paper_cifar100", "strong_cifar100")
                   for header in ("top-1 (%)", "seeds")] for attn, cell in cells.items()} == {
        "c3": ["**71.00 ± 1.00** (paper 69.34)", "3", "**75.00 ± 1.41**", "2"],
        "none": ["69.00 ± 1.00 (paper 67.73)", "3", "72.50 ± 0.71", "2"]}
    # no paper figure beside another recipe
    assert [cells["c3"][f"{recipe} params (M)"] for recipe in ("paper_cifar100", "strong_cifar100")] == [
        "0.343 (paper 0.35)", "0.343"]
    assert "72.60" not in markdown
    assert "different budgets" not in markdown  # 160 and 200 epochs: two recipes, each alike within itself
    assert "Recipes (a column group each, never pooled; bold: the row's best within its recipe): " \
           "experiment=paper_cifar100, experiment=strong_cifar100." in markdown
    rows = rows_by_cell(written["csv"])
    assert {name: (row["recipe"], int(row["seeds"]), float(row["top1_mean"]), row["paper_top1"])
            for name, row in rows.items()} == {
        "paper_cifar100: none": ("paper_cifar100", 3, pytest.approx(69.0), "67.73"),
        "paper_cifar100: c3": ("paper_cifar100", 3, pytest.approx(71.0), "69.34"),
        "strong_cifar100: none": ("strong_cifar100", 2, pytest.approx(72.5), ""),
        "strong_cifar100: c3": ("strong_cifar100", 2, pytest.approx(75.0), "")}
    assert {Path(run).parent.name for run in rows["strong_cifar100: c3"]["runs"].split(";")} == {"strong_cifar100"}
    assert [name for name, row in rows.items() if row["best_in_row"] == "True"] == [
        "paper_cifar100: c3", "strong_cifar100: c3"]  # the best block of each recipe


def test_a_strong_recipe_alone_gets_no_paper_figures(two_recipes, tmp_path):
    written = report([str(two_recipes / "strong_cifar100"), f"out={tmp_path / 'report'}"])
    markdown = written["markdown"].read_text()
    assert "Recipe: experiment=strong_cifar100." in markdown
    assert not [line for line in markdown.splitlines() if line.startswith("|") and "(paper" in line]
    assert "| none params (M) |" in markdown  # one recipe: a column group per block, as before recipes
