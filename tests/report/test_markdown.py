"""report.md's text (c3exp/report/markdown.py): a row whose cells had different budgets says so under its table."""
from __future__ import annotations

from c3exp.cli.report import main as report
from tests.report.conftest import write_hydra_run


def test_a_row_whose_cells_ran_different_epochs_gets_the_budget_note(tmp_path):
    """resnet20: none ran quickstart's 5 epochs, c3 only 2 (a note); resnet32: both ran 5 (none)."""
    runs = tmp_path / "runs"
    for model, attn, epochs in (("resnet20", "none", 5), ("resnet20", "c3", 2), ("resnet32", "none", 5),
                                ("resnet32", "c3", 5)):
        for seed in (0, 1):
            overrides = ["experiment=quickstart", f"model={model}", f"attn={attn}", f"seed={seed}",
                         f"trainer.max_epochs={epochs}"]
            write_hydra_run(runs / f"{model}_{attn}_{seed}", overrides, 0.5 + seed / 10)
    markdown = report([str(runs), f"out={tmp_path / 'report'}"])["markdown"].read_text()
    notes = markdown.split("Rows whose cells had different budgets (compare them with care):\n", 1)[1]
    assert notes.split("\n\n", 1)[0].splitlines() == [
        "- resnet20 / digits: trainer.max_epochs=5 (none); trainer.max_epochs=2 (c3)"]
    assert "| resnet32 | digits |" in markdown  # in the table, not in the notes


def test_budgets_are_compared_within_a_recipe(tmp_path):
    """The strong recipe trains longer by design: only paper cells of unlike epochs get the note."""
    runs = tmp_path / "runs"
    for experiment, attn, epochs in (("paper_cifar100", "none", 160), ("paper_cifar100", "c3", 100),
                                     ("strong_cifar100", "none", 200), ("strong_cifar100", "c3", 200)):
        overrides = [f"experiment={experiment}", "model=resnet20", f"attn={attn}", f"trainer.max_epochs={epochs}"]
        write_hydra_run(runs / f"{experiment}_{attn}", overrides, 0.6)
    markdown = report([str(runs), f"out={tmp_path / 'report'}"])["markdown"].read_text()
    notes = markdown.split("Rows whose cells had different budgets (compare them with care):\n", 1)[1]
    assert notes.split("\n\n", 1)[0].splitlines() == [
        "- resnet20 / cifar100: trainer.max_epochs=160 (paper_cifar100: none); trainer.max_epochs=100 (paper_cifar100: c3)"]
