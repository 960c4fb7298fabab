"""Which runs a report pools, how its cells are told apart, and a note per kind of run it leaves out.

A mean ± std over seeds needs independent samples of one recipe: no debug runs, one run per seed, equal settings.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from c3exp.report.runs import Run

Settings = tuple[tuple[str, str], ...]  # (dotted key, JSON value), as Run.recipe holds them
UNSET = "unset"  # the value of a key a run's config does not have


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
    note = f"Skipped {plural(debug.total(), 'debug run')} ({why}); include_debug=true reports them."
    return [run for run in runs if not run.debug], [note]


def recency(run: Run) -> tuple[float, str]:
    """Newer finish time first; the source path (timestamped run directories) breaks ties."""
    return (run.finished if run.finished is not None else float("-inf"), run.source)


def varied_keys(runs: Sequence[Run]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(task, attn) -> keys differing within one model, data, attn and experiment: they tell a block's cells apart."""
    groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.attn, run.model, run.data, run.experiment].append(dict(run.recipe))
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (task, attn, *_), recipes in groups.items():
        keys[task, attn] |= {key for key in set().union(*recipes) if len({recipe.get(key) for recipe in recipes}) > 1}
    return {block: tuple(sorted(names)) for block, names in keys.items()}


def varied_settings(run: Run, keys: Mapping[tuple[str, str], tuple[str, ...]]) -> Settings:
    """The run's values of its block's varied keys (varied_keys): with its experiment, the cell it is pooled in."""
    recipe = dict(run.recipe)
    return tuple((key, recipe.get(key, UNSET)) for key in keys.get((run.task, run.attn), ()))


def shown_setting(value: str) -> str:
    """A setting's JSON (Run.recipe) as a label shows it: a string without quotes, anything else as JSON."""
    parsed = value if value == UNSET else json.loads(value)
    return parsed if isinstance(parsed, str) else value


def block_label(attn: str, settings: Settings) -> str:
    """'c3', or 'c3 (attn.stages=[1])': the attention block and what tells it from the block's other cells."""
    shown = ", ".join(f"{key}={shown_setting(value)}" for key, value in settings)
    return f"{attn} ({shown})" if shown else attn


def cell_name(*parts: str | None) -> str:
    """'resnet20 / cifar100 / strong_cifar100 / c3' for a note; a part that is None (no experiment) is left out."""
    return " / ".join(part for part in parts if part)


def one_run_per_seed(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """The newest run per seed of a cell, a note per seed re-run: a re-run is no new sample, it would shrink the std."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.model, run.data, run.experiment, run.attn, run.recipe, run.seed].append(run)
    keys = varied_keys(runs)
    kept, notes = [], []
    for (_, model, data, experiment, attn, _, seed), group in groups.items():
        newest = max(group, key=recency)
        kept.append(newest)
        if len(group) > 1:
            name = cell_name(model, data, experiment, block_label(attn, varied_settings(newest, keys)))
            notes.append(f"{name}: {len(group)} runs with seed {seed}; kept the most recent ({newest.source}), "
                         f"left out {len(group) - 1}.")
    return kept, notes


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> Selection:
    """The runs to report: no debug runs (unless asked for), and one run per seed of each cell."""
    kept, notes = (list(runs), []) if include_debug else without_debug_runs(runs)
    skipped = len(runs) - len(kept)
    kept, duplicates = one_run_per_seed(kept)
    return Selection(tuple(kept), tuple(notes + duplicates), skipped)
