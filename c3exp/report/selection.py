"""Which runs a report pools (one recipe, no debug runs, one per seed), and a note per kind left out."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from c3exp.report.runs import Run

Settings = tuple[tuple[str, str], ...]  # (dotted key, JSON value), as Run.recipe holds them
UNSET = "unset"  # the value of a key a run's config does not have


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def varied_keys(runs: Sequence[Run]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(task, attn) -> keys differing within one model, data, attn and experiment: they tell a block's cells apart."""
    groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for run in runs:
        groups[run.task, run.attn, run.model, run.data, run.experiment].append(dict(run.recipe))
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (task, attn, *_), recipes in groups.items():
        keys[task, attn] |= {key for key in set().union(*recipes) if len({recipe.get(key) for recipe in recipes}) > 1}
    return {block: tuple(sorted(names)) for block, names in keys.items()}


def settings_of(run: Run, keys: Iterable[str]) -> Settings:
    """The run's values of `keys`: of its block's varied_keys, with its experiment, they name the cell it pools in."""
    recipe = dict(run.recipe)
    return tuple((key, recipe.get(key, UNSET)) for key in keys)


def shown_setting(value: str) -> str:
    """A setting's JSON (Run.recipe) as a label shows it: a string without quotes, anything else as JSON."""
    parsed = value if value == UNSET else json.loads(value)
    return parsed if isinstance(parsed, str) else value


def block_label(attn: str, settings: Settings) -> str:
    """'c3', or 'c3 (attn.stages=[1])': the attention block and what tells it from the block's other cells."""
    shown = ", ".join(f"{key}={shown_setting(value)}" for key, value in settings)
    return f"{attn} ({shown})" if shown else attn


def select_runs(runs: Sequence[Run], include_debug: bool = False) -> tuple[list[Run], list[str], int]:
    """The runs to report, a note per kind left out, the debug runs skipped: a re-run of a seed is no new sample."""
    debug = Counter(run.debug for run in runs if run.debug and not include_debug)
    why = ", ".join(f"{count} {marker}" for marker, count in debug.most_common())
    notes = [f"Skipped {plural(debug.total(), 'debug run')} ({why}); include_debug=true reports them."] if debug else []
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if include_debug or not run.debug:
            groups[run.task, run.model, run.data, run.experiment, run.attn, run.recipe, run.seed].append(run)
    keys = varied_keys([run for group in groups.values() for run in group])
    kept = []
    for (task, model, data, experiment, attn, _, seed), group in groups.items():
        # newer finish time first; the source path (timestamped run directories) breaks ties
        newest = max(group, key=lambda run: (run.finished if run.finished is not None else float("-inf"), run.source))
        kept.append(newest)
        if len(group) > 1:
            parts = (model, data, experiment, block_label(attn, settings_of(newest, keys.get((task, attn), ()))))
            name = " / ".join(part for part in parts if part)  # no experiment: left out
            notes.append(f"{name}: {len(group)} runs with seed {seed}; kept the most recent ({newest.source}), "
                         f"left out {len(group) - 1}.")
    return kept, notes, debug.total()
