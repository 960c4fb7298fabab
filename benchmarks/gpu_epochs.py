"""Real training runs, timed from outside: each epoch's wall time with its validation (`epochs`), K runs of one
config packed on one GPU by the parallel launcher against one run alone (`pack`), and whether captured steps train
as plain ones do on this GPU (`agree`: the same run with task.cuda_graphs false and true). benchmarks/gpu.sh runs all.
    python benchmarks/gpu_epochs.py epochs "model=resnet20 trainer=gpu" "model=resnet20 trainer=gpu_fast"
    python benchmarks/gpu_epochs.py pack --jobs 4 "model=resnet20 trainer=gpu_fast data=synthetic trainer.max_epochs=4"
    python benchmarks/gpu_epochs.py agree "model=resnet20 attn=c3 data=digits trainer=gpu_fast trainer.max_epochs=3"
Every configuration is a `python -m c3exp` command line (its overrides in one argument); epoch 0 (warm-up, cuDNN's
search, graph capture) is left out of the medians."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

CLOCK_FILE = "epoch_clock.json"


class EpochClock(L.Callback):
    """Seconds from each training epoch's start to the end of its validation, the GPU's queue drained at both ends;
    written to <run dir>/epoch_clock.json (the command line adds it as callbacks.epoch_clock)."""

    def __init__(self) -> None:
        self.start, self.times = 0.0, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = drained()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.times.append(drained() - self.start)
            Path(trainer.default_root_dir, CLOCK_FILE).write_text(json.dumps(self.times))


def drained() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def c3exp(args: list[str]) -> None:
    """`python -m c3exp args` with this folder importable (for EpochClock); its output only when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "c3exp", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): python -m c3exp {' '.join(args)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def later_epochs(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def timed_run(overrides: str, run_dir: Path) -> dict[str, float]:
    """One run of `overrides`: the median epoch with validation, its training part, and training images/s."""
    c3exp([*overrides.split(), "+callbacks.epoch_clock._target_=gpu_epochs.EpochClock", f"hydra.run.dir={run_dir}"])
    history = json.loads((run_dir / "results.json").read_text())["history"]
    return {"epoch_s": later_epochs(json.loads((run_dir / CLOCK_FILE).read_text())),
            "train_s": later_epochs([row["train/epoch_time"] for row in history]),
            "images_per_s": later_epochs([row["train/images_per_sec"] for row in history])}


def epochs(configs: list[str], root: Path) -> None:
    print(f"{'configuration':<60} {'epoch+val s':>11} {'train s':>8} {'train img/s':>12}")
    for index, overrides in enumerate(configs):
        row = timed_run(overrides, root / f"run{index}")
        print(f"{overrides:<60} {row['epoch_s']:>11.2f} {row['train_s']:>8.2f} {row['images_per_s']:>12.0f}")


def pack(overrides: str, jobs: int, root: Path) -> None:
    """One run alone, then `jobs` runs (seeds 0..jobs-1) at once through hydra/launcher=parallel on one GPU."""
    alone = timed_run(overrides, root / "alone")["images_per_s"]
    sweep = root / "packed"
    seeds = ",".join(map(str, range(jobs)))
    c3exp(["-m", *overrides.split(), "hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}", f"seed={seeds}",
           f"hydra.sweep.dir={sweep}"])
    each = [later_epochs([row["train/images_per_sec"] for row in json.loads(path.read_text())["history"]])
            for path in sorted(sweep.glob("*/results.json"))]
    print(f"{overrides}: one run alone {alone:.0f} images/s; {len(each)} packed: "
          f"{' + '.join(f'{value:.0f}' for value in each)} = {sum(each):.0f} images/s, x{sum(each) / alone:.2f}")


def agree(overrides: str, root: Path) -> None:
    """Each epoch's training loss and validation accuracy, plain steps beside captured ones (cuDNN's and the fused
    optimiser's float rounding differ, so close, not equal; CI checks exact equality of the uncaptured step on a CPU)."""
    runs = {}
    for graphs in ("false", "true"):
        run_dir = root / f"graphs-{graphs}"
        c3exp([*overrides.split(), f"task.cuda_graphs={graphs}", f"hydra.run.dir={run_dir}"])
        runs[graphs] = json.loads((run_dir / "results.json").read_text())["history"]
    print(f"{overrides}\n{'epoch':>5} {'train/loss plain':>17} {'captured':>9} {'val/acc1 plain':>15} {'captured':>9}")
    for plain, captured in zip(runs["false"], runs["true"]):
        print(f"{plain['epoch']:>5} {plain['train/loss']:>17.4f} {captured['train/loss']:>9.4f} "
              f"{plain['val/acc1']:>15.4f} {captured['val/acc1']:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["epochs", "pack", "agree"])
    parser.add_argument("configs", nargs="+", help="one argument of overrides per configuration")
    parser.add_argument("--jobs", type=int, default=4, help="pack: runs at once on the GPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpu_epochs-") as root:
        if args.mode == "epochs":
            epochs(args.configs, Path(root))
            return
        for index, overrides in enumerate(args.configs):
            if args.mode == "pack":
                pack(overrides, args.jobs, Path(root) / str(index))
            else:
                agree(overrides, Path(root) / str(index))


if __name__ == "__main__":
    main()
