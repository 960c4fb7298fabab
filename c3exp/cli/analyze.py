"""The paper's Fig. 4 and Fig. 6 from c3exp checkpoints and runs, and two detectors' boxes side by side.

example: c3exp analyze cam baseline=outputs/a/checkpoints/last.ckpt c3=outputs/b/checkpoints/last.ckpt images=4
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from omegaconf import DictConfig, OmegaConf

from c3exp.cli.options import command, help_text, option, parse
from c3exp.errors import check
from c3exp.results import write_json
from c3exp.schema import PositiveInt, Probability

if TYPE_CHECKING:
    from torch import nn

    from c3exp.analysis.correlation import StageCorrelation
    from c3exp.data import ImageDataModule

Split = Literal["val", "test"]
OUT = "output file (default: <common parent folder>/{})"


@dataclass
class Correlation:
    """Channel correlation at every stage output of a checkpoint's network over a few batches of its data: writes
    correlation.npz (C x C matrices per stage), correlation.json (mean |corr| off the diagonal per stage) and a
    heatmap PNG per stage; any other key=value changes the checkpoint's config, as in c3exp eval"""

    ckpt_path: str = option("the checkpoint", metavar="PATH")
    batches: PositiveInt = option("batches of the split to use", 2)
    split: Split = option("which split", "val")
    out: str | None = option("output folder (default: <ckpt dir>/<ckpt name>_correlation)", None, metavar="DIR")


@dataclass
class CorrelationCompare:
    """Fig. 4 from two runs trained with callbacks=analysis: mean |corr| per stage across the recorded epochs,
    both runs on the same axes, and one stage's matrices at a few epochs from first to last"""

    baseline: str = option("baseline run folder", metavar="DIR")
    c3: str = option("C3 run folder", metavar="DIR")
    stage: PositiveInt | None = option("stage whose matrices to draw (default: the last)", None)
    epochs: PositiveInt = option("how many epochs of matrices", 3)
    out: str | None = option(OUT.format("correlation_compare.png"), None, metavar="FILE")


@dataclass
class Pair:
    baseline: str = option("baseline checkpoint", metavar="PATH")
    c3: str = option("C3 checkpoint", metavar="PATH")
    images: PositiveInt = option("how many images (at most the split's)", 4)
    split: Split = option("which split", "test")
    data_root: str | None = option("where the data set is (default: this machine's data.root, C3EXP_DATA or data/)",
                                   None, metavar="DIR")


@dataclass
class Cam(Pair):
    """Fig. 6: the first images of the split with the maps of each network's most activated last-stage
    channels over them, baseline and C3 side by side in one PNG"""

    topk: PositiveInt = option("channels per image", 6)
    out: str | None = option(OUT.format("cam_compare.png"), None, metavar="FILE")


@dataclass
class Boxes(Pair):
    """Two detection checkpoints on the same data: per image a row with the ground-truth boxes and each
    network's detections scoring at least `score`, each box with its class name and score, in one PNG"""

    score: Probability = option("the lowest score of a drawn detection", 0.5)
    out: str | None = option(OUT.format("boxes_compare.png"), None, metavar="FILE")


def load_network(ckpt_path: str, task: str, role: str, overrides: Sequence[str] = (),
                 data_root: str | None = None) -> tuple[nn.Module, DictConfig]:
    """The trained network (eval mode) and config, data from `data_root`; another task's: one line naming `role`."""
    from c3exp.cli.eval import load_trained
    from c3exp.tasks import build_network

    net, cfg = load_trained(ckpt_path, overrides, build_network, prefix="net.")
    found = OmegaConf.select(cfg, "task.name")
    check(found == task, role, ckpt_path, f"a {task} checkpoint (task={task}), not task={found}")
    if data_root and "root" in cfg.data:
        cfg.data.root = data_root
    return net.eval(), cfg


def load_pair(options: Pair, task: str) -> tuple[dict[str, tuple[nn.Module, str]], Any, list]:
    """{baseline|C3: (network, "model + attn")} of `task` trained on the same data, that data and its first samples."""
    from c3exp.analysis.correlation import first_samples

    (baseline, cfg), (c3, c3_cfg) = (load_network(path, task, role, data_root=options.data_root)
                                     for role, path in (("baseline", options.baseline), ("c3", options.c3)))
    check(cfg.data.name == c3_cfg.data.name, "c3", options.c3,
          f"a checkpoint trained on the baseline's data ({cfg.data.name}), not {c3_cfg.data.name}")
    datamodule, loader = split_loader(cfg, options.split, options.images)
    nets = {role: (net, f"{net_cfg.model.name} + {net_cfg.attn.name}")
            for role, net, net_cfg in (("baseline", baseline, cfg), ("C3", c3, c3_cfg))}
    return nets, datamodule, first_samples(loader, options.images)


def split_loader(cfg: DictConfig, split: str, images: int | None = None) -> tuple[ImageDataModule, Any]:
    """The data module and `split`'s unshuffled loader, which must hold `images` (else a figure row per image)."""
    from c3exp.training.train import build_datamodule

    datamodule = build_datamodule(cfg)
    datamodule.setup()
    available = len(datamodule.dataset(split))
    check(images is None or images <= available, "images", images,
          f"1..{available} (the {split} images of {cfg.data.name})")
    return datamodule, getattr(datamodule, f"{split}_dataloader")()


def figure(options: Any, name: str, draw: Callable[[Path], Any]) -> Path:
    """`draw` into `out`, or `name` in the deepest folder holding baseline and c3: where their comparison belongs."""
    parents = [Path(path).resolve().parent for path in (options.baseline, options.c3)]
    out = Path(options.out or Path(os.path.commonpath(parents)) / name)
    draw(out)
    print(f"wrote {out}")
    return out


def run_correlation(args: list[str]) -> list[StageCorrelation]:
    from c3exp.analysis.correlation import save_matrices, stage_correlations
    from c3exp.analysis.plots import correlation_heatmaps

    options, overrides = parse(Correlation, args, overrides=True)
    net, cfg = load_network(options.ckpt_path, "classification", "ckpt_path", overrides)
    loader = split_loader(cfg, options.split)[1]
    correlations = stage_correlations(net, (images for images, *_ in itertools.islice(loader, options.batches)))
    images, name = correlations[0].images, f"{cfg.model.name} + {cfg.attn.name} on {cfg.data.name}"
    out = Path(options.out or f"{Path(options.ckpt_path).with_suffix('')}_correlation")
    out.mkdir(parents=True, exist_ok=True)
    save_matrices(correlations, out / "correlation.npz")
    write_json(out / "correlation.json", {"checkpoint": name, "images": images, "stages": [
        {"stage": c.stage, "channels": len(c.matrix), "mean_abs_corr": c.mean_abs, "constant_channels": c.constant}
        for c in correlations]})
    for c in correlations:
        correlation_heatmaps([c.matrix], [f"{len(c.matrix)} channels, mean |corr| {c.mean_abs:.3f}"],
                             f"{name}: stage {c.stage} channel correlation", out / f"stage{c.stage}.png")
        print(f"stage {c.stage}: mean |corr| = {c.mean_abs:.4f} ({len(c.matrix)} channels, {c.constant} constant)")
    print(f"wrote {out}/correlation.npz, correlation.json, stage*.png ({images} {options.split} images)")
    return correlations


def run_correlation_compare(args: list[str]) -> Path:
    import numpy as np

    from c3exp.analysis.correlation import load_correlation_history
    from c3exp.analysis.plots import correlation_over_training

    options, _ = parse(CorrelationCompare, args)
    runs = f"{options.baseline}, {options.c3}"
    histories = [load_correlation_history(options.baseline, "baseline"), load_correlation_history(options.c3, "c3")]
    stages = len(histories[0].mean_abs[0])
    check(all(len(h.mean_abs[0]) == stages for h in histories), "runs", runs,
          "two runs of networks with the same number of stages")
    stage = options.stage or stages
    check(stage <= stages, "stage", stage, f"a stage from 1 to {stages}")
    shared = sorted(set(histories[0].epochs) & set(histories[1].epochs))
    check(bool(shared), "runs", runs, "two runs with at least one recorded epoch in common")
    for history in histories:
        last = ", ".join(f"stage {i + 1} {value:.4f}" for i, value in enumerate(history.mean_abs[-1]))
        print(f"{history.label}: mean |corr| after epoch {history.epochs[-1]}: {last}")
    # options.epochs of them from first to last, evenly spaced (fewer when fewer were recorded)
    picks = np.linspace(0, len(shared) - 1, num=min(options.epochs, len(shared))).round().astype(int)
    draw = partial(correlation_over_training, histories, stage, [shared[i] for i in dict.fromkeys(picks.tolist())])
    return figure(options, "correlation_compare.png", draw)


def run_cam(args: list[str]) -> Path:
    import torch

    from c3exp.analysis.cam import top_channel_maps
    from c3exp.analysis.plots import cam_comparison

    options, _ = parse(Cam, args)
    nets, datamodule, samples = load_pair(options, "classification")
    images, labels = (torch.stack(column).cpu() for column in zip(*samples))
    with torch.no_grad():
        channels = min(net.forward_features(images[:1]).shape[1] for net, _ in nets.values())
    check(options.topk <= channels, "topk", options.topk, f"at most the {channels} channels of the last stage")
    panels = {f"{role} ({name})": top_channel_maps(net, images, options.topk) for role, (net, name) in nets.items()}
    maps = list(panels.values())
    captions = [f"label {int(label)}\npredicted {int(maps[0].predictions[i])} | {int(maps[1].predictions[i])}"
                for i, label in enumerate(labels)]
    # the data module's normalisation undone: (N, 3, H, W) -> (N, H, W, 3) in [0, 1]
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (datamodule.mean, datamodule.std))
    shown = (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    for label, panel in panels.items():
        print(f"{label}: top-{options.topk} channels per image: {panel.channels.tolist()}")
    draw = partial(cam_comparison, shown, captions, panels, input_title="input\n(predicted:\nbaseline | C3)")
    return figure(options, "cam_compare.png", draw)


def run_boxes(args: list[str]) -> Path:
    import torch

    from c3exp.analysis.plots import box_comparison

    options, _ = parse(Boxes, args)
    nets, datamodule, samples = load_pair(options, "detection")
    images = [image.cpu() for image, _ in samples]
    columns = {"ground truth": [{key: target[key].numpy() for key in ("boxes", "labels")} for _, target in samples]}
    for role, (net, name) in nets.items():
        with torch.no_grad():  # the detections scoring at least `score`
            columns[f"{role}: {name}"] = [
                {key: found[key][found["scores"] >= options.score].numpy() for key in ("boxes", "labels", "scores")}
                for found in net(list(images))]
    class_names = getattr(datamodule, "class_names", None) or ()  # without names: "class 3" (box_comparison)
    for label, rows in columns.items():
        print(f"{label}: boxes per image {[len(row['labels']) for row in rows]}"
              + ("" if label == "ground truth" else f" (score >= {options.score:g})"))
    shown = [image.permute(1, 2, 0).clamp(0, 1).numpy() for image in images]
    return figure(options, "boxes_compare.png", partial(box_comparison, shown, columns, class_names))


ANALYSES: dict[str, tuple[type, Callable[[list[str]], Any]]] = {
    "correlation": (Correlation, run_correlation), "correlation-compare": (CorrelationCompare, run_correlation_compare),
    "cam": (Cam, run_cam), "boxes": (Boxes, run_boxes)}


def analyses_help() -> str:
    """This docstring, then per analysis its usage, what it does and its options."""
    return "\n\n".join([help_text(f"analyze <{'|'.join(ANALYSES)}>", __doc__), *(
        help_text(f"analyze {name}", options.__doc__, options) for name, (options, _) in ANALYSES.items())])


def run(args: list[str]) -> Any:
    name = args[0] if args else None
    check(name in ANALYSES, "analysis", name, ANALYSES)
    return ANALYSES[name][1](args[1:])


def main(argv: Sequence[str] | None = None) -> Any:
    return command(argv, analyses_help, run)
