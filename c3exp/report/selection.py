"""Which runs a report pools into its means, and a note for each kind of run it leaves out.

A mean ± std over seeds estimates one recipe from independent samples, so a report drops debug runs
(unless asked), keeps one recipe per cell and one run per seed of it, and says what it dropped and why.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from c3exp.report.runs import Run

Recipe = tuple[tuple[str, str], ...]  # Run.recipe


@dataclass(frozen=True)
class Selection:
    """The runs a report summarises, and one line per kind of run it left out."""

    runs: tuple[Run, ...]
    notes: tuple[str, ...]
    skipped_debug: int = 0


def plural(count: int, word: str) -> str:
    """'1 run', '2 runs'."""
    return f"{count} {word}{'s' * (count != 1)}"


def without_debug_runs(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """Runs of the debug configs out, with one line saying how many and why."""
    debug = Counter(run.debug for run in runs if run.debug)
    if not debug:
        return list(runs), []
    why = ", ".join(f"{count} {marker}" for marker, count in debug.most_common())
    note = f"Skipped {plural(debug.total(), 'debug run')} ({why}); --include-debug reports them."
    return [run for run in runs if not run.debug], [note]


def recency(run: Run) -> tuple[float, str]:
    """Newer finish time first; the source path (timestamped run directories) breaks ties."""
    return (run.finished if run.finished is not None else float("-inf"), run.source)


def differences(left: Recipe, reported: Recipe, shown: int = 3) -> str:
    """'trainer.limit_train_batches=10 (reported: null)' for the first `shown` settings that differ."""
    mine, theirs = dict(left), dict(reported)
    keys = sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
    texts = [f"{key}={mine.get(key, 'unset')} (reported: {theirs.get(key, 'unset')})" for key in keys[:shown]]
    return ", ".join(texts) + (f" and {plural(len(keys) - shown, 'other setting')}" if len(keys) > shown else "")


def sources(runs: Sequence[Run]) -> str:
    """Where the runs came from, for a note: 'outputs/a, outputs/b'."""
    return ", ".join(run.source for run in runs)


def recipe_weight(group: Sequence[Run]) -> tuple[int, int, tuple[float, str]]:
    """The recipe a cell reports: the most seeds, then the most runs, then the most recent run."""
    return len({run.seed for run in group}), len(group), max(recency(run) for run in group)


def one_recipe_per_cell(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The runs of one recipe per (model, data, attention), with a line per recipe left out and what differed.

    A mean over seeds estimates one recipe: averaging a 10-batch run with a full one measures neither.
    """
    cells: dict[tuple[str, str, str, str], dict[Recipe, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        cells[run.task, run.model, run.data, run.attn][run.recipe].append(run)
    kept, notes = [], []
    for (_, model, data, attn), recipes in cells.items():
        reported = max(recipes.values(), key=recipe_weight)
        kept += reported
        notes += [f"{model} / {data} / {attn}: left out {plural(len(group), 'run')} whose settings differ from the "
                  f"reported seeds' ({differences(recipe, reported[0].recipe)}): {sources(group)}."
                  for recipe, group in recipes.items() if group is not reported]
    return kept, notes


def one_run_per_seed(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The most recent run of each (model, data, attention, seed), with a line per seed that had several.

    A re-run of a seed is not a new sample: averaging both would shrink the std and skew the mean.
    """
    groups: dict[tuple[str, str, str, str, int | None], list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.model, run.data, run.attn, run.seed].append(run)
    kept, notes = [], []
    for (_, model, data, attn, seed), group in groups.items():
        newest = max(group, key=recency)
        kept.append(newest)
        if len(group) > 1:
            notes.append(f"{model} / {data} / {attn}: {len(group)} runs with seed {seed}; kept the most recent "
                         f"({newest.source}), left out {len(group) - 1}.")
    return kept, notes


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> Selection:
    """The runs to report: no debug runs (unless asked for), one recipe per cell, and one run per seed of it."""
    kept, notes = (list(runs), []) if include_debug else without_debug_runs(runs)
    skipped = len(runs) - len(kept)
    kept, other_settings = one_recipe_per_cell(kept)
    kept, duplicates = one_run_per_seed(kept)
    return Selection(tuple(kept), tuple(notes + other_settings + duplicates), skipped)
