"""The host time the training loop costs per step around a graphed step: `python -m c3exp` as a real run does it
(Lightning's loop, c3exp's callbacks, the CSV logger, batches drawn on the device), with the captured step's replay
replaced by nothing. A replay only queues work, so a graphed step costs at least this on the host; the GPU hides it
where its step takes longer.
    python benchmarks/loop_overhead.py                      # on the CPU
    python benchmarks/loop_overhead.py trainer=gpu_fast     # on a GPU"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from omegaconf import open_dict

import c3exp
from c3exp.training import graphs
from c3exp.training.train import train

STEPS = 1000
SMALL = ["model=resnet20", "attn=none", "data=synthetic", "data.image_size=8", "data.batch_size=8",
         f"data.num_train={STEPS * 8}", "data.num_test=80", "data.on_device=true", "task.cuda_graphs=true",
         "trainer.max_epochs=3"]


def main(overrides: list[str]) -> None:
    replay = graphs.StepGraphs.__call__

    def training_replays_nothing(self: graphs.StepGraphs, *inputs):
        return replay(self, *inputs) if self.step.__name__ == "graph_eval_step" else inputs[0]

    graphs.StepGraphs.__call__ = training_replays_nothing
    for bar in ("false", "true"):
        with tempfile.TemporaryDirectory() as run_dir:
            cfg = c3exp.compose([*SMALL, *overrides, f"trainer.enable_progress_bar={bar}"])
            with open_dict(cfg):
                cfg.output_dir = str(Path(run_dir))
            history = train(cfg)["history"]
        times = [row["train/epoch_time"] / STEPS * 1e6 for row in history]
        print(f"progress bar {bar:>5}: {' '.join(f'{t:.0f}' for t in times)} us of host time per step (epochs 0-2)")


if __name__ == "__main__":
    main(sys.argv[1:])
