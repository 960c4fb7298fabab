"""`python -m c3exp.analyze <command>`: the paper's Fig. 4 and Fig. 6 from c3exp checkpoints and runs, and
detections side by side.

  correlation ckpt_path=PATH [key=value ...] [--batches N] [--split val|test] [--out DIR]
      Channel correlation at every stage output of a checkpoint's network over N batches of its data
      (see c3exp.analysis.correlation for the definition). Writes correlation.npz (C x C matrices,
      keys stage1, stage2, ...), correlation.json (mean |corr| off the diagonal per stage) and a heatmap
      PNG per stage to DIR (default: <ckpt dir>/<ckpt name>_correlation/); prints the mean |corr| per stage.
      key=value changes the checkpoint's config, as in c3exp.eval (e.g. data.root=/datasets).

  correlation-compare BASELINE_RUN C3_RUN [--stage S] [--epochs K] [--out FILE]
      Fig. 4 from two runs trained with `callbacks=analysis`: mean |corr| per stage across the epochs
      the callback recorded, both runs on the same axes, and stage S's matrices (default: the last
      stage) at K epochs from first to last (default 3). Default FILE: correlation_compare.png in the
      runs' common parent folder.

  cam BASELINE_CKPT C3_CKPT [--images N] [--topk K] [--split val|test] [--data-root DIR] [--out FILE]
      Fig. 6: the first N images of the split (default 4, test; at most the split's size) with the maps of
      each network's K most activated last-stage channels (default 6) over them, baseline and C3 side by
      side in one PNG.
      Default FILE: cam_compare.png in the checkpoints' common parent folder.

  boxes BASELINE_CKPT C3_CKPT [--images N] [--score S] [--split val|test] [--data-root DIR] [--out FILE]
      Two detection checkpoints (task=detection) on the same data: the first N images of the split
      (default 4, test; at most the split's size), one row each, with the ground-truth boxes, the
      baseline's and the C3 network's detections scoring at least S (default 0.5, in [0, 1]), each box
      with its class name and score, in one PNG.
      Default FILE: boxes_compare.png in the checkpoints' common parent folder.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from c3exp.analysis.callback import first_batch, load_correlation_history
from c3exp.analysis.cam import top_channel_maps
from c3exp.analysis.cli import ArgumentParser, positive_int
from c3exp.analysis.correlation import StageCorrelation, stage_correlations
from c3exp.analysis.plots import box_comparison, cam_comparison, correlation_heatmaps, correlation_over_training
from c3exp.cli import run_reporting_user_errors
from c3exp.errors import check
from c3exp.results import RESULTS_FILE, read_results, write_json
from c3exp.utils.atomic import write_with

if TYPE_CHECKING:
    from c3exp.data import ImageDataModule

SPLITS = ("val", "test")


# -- checkpoints and data ------------------------------------------------------------------------
def load_network(ckpt_path: str | Path, overrides: Sequence[str] = (), data_root: str | None = None) -> tuple[nn.Module, DictConfig]:
    """The checkpoint's network (the one its task trains) with its trained weights (eval mode), and its run config
    (its data read from `data_root` where its data config has a root: the bundled digits have none)."""
    from c3exp.checkpoints import load_checkpoint
    from c3exp.eval import config_from_checkpoint, load_weights
    from c3exp.models import without_pretrained
    from c3exp.tasks import build_network

    checkpoint = load_checkpoint(ckpt_path)
    cfg = config_from_checkpoint(checkpoint, list(overrides), ckpt_path)
    if data_root and "root" in cfg.data:
        cfg.data.root = data_root
    net = build_network(without_pretrained(cfg))  # the checkpoint's weights replace pretrained ones: no download
    weights = {key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items() if key.startswith("net.")}
    load_weights(net, weights, ckpt_path)
    return net.eval(), cfg


def load_networks(args: argparse.Namespace) -> tuple[tuple[nn.Module, DictConfig], tuple[nn.Module, DictConfig]]:
    """The two checkpoints of a comparison; their data is read from --data-root (never a checkpoint's own root)."""
    return load_network(args.baseline, data_root=args.data_root), load_network(args.c3, data_root=args.data_root)


def check_task(cfg: DictConfig, task: str, role: str, ckpt_path: str | Path) -> None:
    """The command reads networks of one task: another's is a one-line error, not a traceback deep inside."""
    found = OmegaConf.select(cfg, "task.name")
    check(found == task, role, str(ckpt_path), f"a {task} checkpoint (task={task}), not task={found}")


def check_same_data(cfg: DictConfig, other: DictConfig, ckpt_path: str | Path) -> None:
    """Both networks of a comparison are drawn on the baseline's data: the other must have trained on it."""
    check(cfg.data.name == other.data.name, "c3 checkpoint", ckpt_path,
          f"a checkpoint trained on the baseline's data ({cfg.data.name}), not {other.data.name}")


def split_loader(cfg: DictConfig, split: str):
    """The run's data module and the (unshuffled) loader of `split`."""
    from c3exp.train import build_datamodule

    check(split in SPLITS, "--split", split, SPLITS)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return datamodule, getattr(datamodule, f"{split}_dataloader")()


def split_size(datamodule: ImageDataModule, split: str) -> int:
    """How many images `split` holds: the most a command can take from it."""
    return len(datamodule.dataset(split))


def check_images(count: int, datamodule: ImageDataModule, split: str, name: str) -> None:
    """--images must fit the split: more would draw one figure row per image of the whole split and more."""
    available = split_size(datamodule, split)
    check(count <= available, "--images", count, f"1..{available} (the {split} images of {name})")


def image_batches(loader, count: int, seen: list[int] | None = None) -> Iterator[torch.Tensor]:
    """The images of the loader's first `count` batches; the size of each batch is appended to `seen`.

    Counting what was consumed works for every loader kind: a DataLoader, and data.on_device's
    DeviceBatches, which has no `.dataset`.
    """
    for images, *_ in itertools.islice(loader, count):
        if seen is not None:
            seen.append(len(images))
        yield images


def common_parent(paths: Sequence[str | Path]) -> Path:
    """The deepest folder holding all `paths`: where a figure comparing them belongs."""
    return Path(os.path.commonpath([Path(path).resolve().parent for path in paths]))


# -- correlation -----------------------------------------------------------------------------------
def correlation_outputs(correlations: Sequence[StageCorrelation], out: Path, name: str, images: int) -> list[Path]:
    """correlation.npz, correlation.json and one heatmap per stage in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    matrices = {f"stage{c.stage}": c.matrix for c in correlations}
    write_with(out / "correlation.npz", lambda file: np.savez_compressed(file, **matrices))
    summary = {"checkpoint": name, "images": images,
               "stages": [{"stage": c.stage, "channels": len(c.matrix), "mean_abs_corr": c.mean_abs,
                           "constant_channels": c.constant} for c in correlations]}
    write_json(out / "correlation.json", summary)
    return [
        correlation_heatmaps([c.matrix], [f"{len(c.matrix)} channels, mean |corr| {c.mean_abs:.3f}"],
                             f"{name}: stage {c.stage} channel correlation", out / f"stage{c.stage}.png")
        for c in correlations
    ]


def run_correlation(args: argparse.Namespace) -> list[StageCorrelation]:
    from c3exp.eval import split_ckpt_arg

    ckpt_path, overrides = split_ckpt_arg(args.settings)
    net, cfg = load_network(ckpt_path, overrides)
    check_task(cfg, "classification", "ckpt_path", ckpt_path)
    _, loader = split_loader(cfg, args.split)
    seen: list[int] = []
    correlations = stage_correlations(net, image_batches(loader, args.batches, seen))
    images = sum(seen)
    out = Path(args.out) if args.out else Path(ckpt_path).parent / f"{Path(ckpt_path).stem}_correlation"
    name = f"{cfg.model.name} + {cfg.attn.name} on {cfg.data.name}"
    correlation_outputs(correlations, out, name, images)
    for c in correlations:
        print(f"stage {c.stage}: mean |corr| = {c.mean_abs:.4f} ({len(c.matrix)} channels, {c.constant} constant)")
    print(f"wrote {out}/correlation.npz, correlation.json, stage*.png ({images} {args.split} images)")
    return correlations


# -- correlation-compare ------------------------------------------------------------------------------
def run_label(run_dir: str | Path, fallback: str) -> str:
    results = Path(run_dir) / RESULTS_FILE
    if not results.is_file():
        return fallback
    info = read_results(results)
    return f"{info['model']} + {info['attn']}"


def spread_epochs(epochs: Sequence[int], count: int) -> list[int]:
    """`count` epochs from first to last, evenly spaced (fewer when fewer were recorded)."""
    picks = np.linspace(0, len(epochs) - 1, num=min(count, len(epochs))).round().astype(int)
    return [epochs[i] for i in dict.fromkeys(picks.tolist())]


def run_correlation_compare(args: argparse.Namespace) -> Path:
    histories = [load_correlation_history(path, run_label(path, fallback))
                 for path, fallback in ((args.baseline, "baseline"), (args.c3, "c3"))]
    stages = len(histories[0].mean_abs[0])
    check(all(len(h.mean_abs[0]) == stages for h in histories), "runs", f"{args.baseline}, {args.c3}",
          "two runs of networks with the same number of stages")
    stage = args.stage or stages
    check(1 <= stage <= stages, "--stage", stage, f"a stage from 1 to {stages}")
    shared = sorted(set(histories[0].epochs).intersection(*(h.epochs for h in histories[1:])))
    check(bool(shared), "runs", f"{args.baseline}, {args.c3}", "two runs with at least one recorded epoch in common")
    out = Path(args.out) if args.out else common_parent([args.baseline, args.c3]) / "correlation_compare.png"
    correlation_over_training(histories, stage, spread_epochs(shared, args.epochs), out)
    for history in histories:
        last = ", ".join(f"stage {i + 1} {value:.4f}" for i, value in enumerate(history.mean_abs[-1]))
        print(f"{history.label}: mean |corr| after epoch {history.epochs[-1] + 1}: {last}")
    print(f"wrote {out}")
    return out


# -- cam -----------------------------------------------------------------------------------------
def display_images(images: torch.Tensor, datamodule) -> np.ndarray:
    """Undo the data module's normalisation: (N, 3, H, W) -> (N, H, W, 3) in [0, 1] for drawing."""
    mean = torch.tensor(datamodule.mean).view(1, -1, 1, 1)
    std = torch.tensor(datamodule.std).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def run_cam(args: argparse.Namespace) -> Path:
    (baseline, cfg), (c3, c3_cfg) = load_networks(args)
    check_task(cfg, "classification", "baseline checkpoint", args.baseline)
    check_task(c3_cfg, "classification", "c3 checkpoint", args.c3)
    check_same_data(cfg, c3_cfg, args.c3)
    datamodule, loader = split_loader(cfg, args.split)
    check_images(args.images, datamodule, args.split, cfg.data.name)
    images, labels = first_batch(loader, args.images)
    with torch.no_grad():
        channels = min(net.forward_features(images[:1]).shape[1] for net in (baseline, c3))
    check(args.topk <= channels, "--topk", args.topk, f"at most the {channels} channels of the last stage")
    panels = {
        f"baseline ({cfg.model.name} + {cfg.attn.name})": top_channel_maps(baseline, images, args.topk),
        f"C3 ({c3_cfg.model.name} + {c3_cfg.attn.name})": top_channel_maps(c3, images, args.topk),
    }
    maps = list(panels.values())
    captions = [f"label {int(label)}\npredicted {int(maps[0].predictions[i])} | {int(maps[1].predictions[i])}"
                for i, label in enumerate(labels)]
    out = Path(args.out) if args.out else common_parent([args.baseline, args.c3]) / "cam_compare.png"
    cam_comparison(display_images(images, datamodule), captions, panels, out, "input\n(predicted:\nbaseline | C3)")
    for label, panel in panels.items():
        print(f"{label}: top-{args.topk} channels per image: {panel.channels.tolist()}")
    print(f"wrote {out}")
    return out


# -- boxes ---------------------------------------------------------------------------------------
def first_detection_samples(loader, count: int) -> tuple[list[torch.Tensor], list[dict]]:
    """The first `count` (image, target) pairs of a non-shuffled detection loader: lists, as it yields them."""
    images, targets = [], []
    for batch_images, batch_targets in loader:
        images.extend(image.cpu() for image in batch_images)
        targets.extend(batch_targets)
        if len(images) >= count:
            break
    return images[:count], targets[:count]


@torch.no_grad()
def detections_above(net: nn.Module, images: Sequence[torch.Tensor], score: float) -> list[dict[str, np.ndarray]]:
    """The detector's boxes, labels and scores per image, those scoring at least `score`."""
    found = []
    for detection in net(list(images)):
        keep = detection["scores"] >= score
        found.append({key: detection[key][keep].numpy() for key in ("boxes", "labels", "scores")})
    return found


def run_boxes(args: argparse.Namespace) -> Path:
    check(0.0 <= args.score <= 1.0, "--score", args.score, "a detection score in [0, 1]")
    (baseline, cfg), (c3, c3_cfg) = load_networks(args)
    check_task(cfg, "detection", "baseline checkpoint", args.baseline)
    check_task(c3_cfg, "detection", "c3 checkpoint", args.c3)
    check_same_data(cfg, c3_cfg, args.c3)
    datamodule, loader = split_loader(cfg, args.split)
    check_images(args.images, datamodule, args.split, cfg.data.name)
    images, targets = first_detection_samples(loader, args.images)
    columns = {"ground truth": [{key: target[key].numpy() for key in ("boxes", "labels")} for target in targets]}
    for role, net, net_cfg in (("baseline", baseline, cfg), ("C3", c3, c3_cfg)):
        columns[f"{role}: {net_cfg.model.name} + {net_cfg.attn.name}"] = detections_above(net, images, args.score)
    class_names = getattr(datamodule, "class_names", None) or [f"class {i}" for i in range(cfg.data.num_classes)]
    out = Path(args.out) if args.out else common_parent([args.baseline, args.c3]) / "boxes_compare.png"
    box_comparison([image.permute(1, 2, 0).clamp(0, 1).numpy() for image in images], columns, class_names, out)
    for label, rows in columns.items():
        print(f"{label}: boxes per image {[len(row['labels']) for row in rows]}"
              + ("" if label == "ground truth" else f" (score >= {args.score:g})"))
    print(f"wrote {out}")
    return out


# -- command line --------------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m c3exp.analyze",
                            description="Fig. 4 and Fig. 6 of the C3 paper, and detections, from c3exp runs.",
                            epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    correlation = commands.add_parser("correlation", help="channel correlation per stage of a checkpoint")
    correlation.add_argument("settings", nargs="+", metavar="ckpt_path=PATH [key=value]")
    correlation.add_argument("--batches", type=positive_int, default=2, help="batches of the split to use (default 2)")
    correlation.add_argument("--split", choices=SPLITS, default="val")
    correlation.add_argument("--out", help="output folder (default: <ckpt dir>/<ckpt name>_correlation)")
    correlation.set_defaults(run=run_correlation)

    compare = commands.add_parser("correlation-compare", help="baseline vs C3 correlation across training")
    compare.add_argument("baseline", help="baseline run directory (trained with callbacks=analysis)")
    compare.add_argument("c3", help="C3 run directory (trained with callbacks=analysis)")
    compare.add_argument("--stage", type=positive_int, help="stage whose matrices to draw (default: the last)")
    compare.add_argument("--epochs", type=positive_int, default=3, help="how many epochs of matrices (default 3)")
    compare.add_argument("--out", help="output PNG (default: <common parent>/correlation_compare.png)")
    compare.set_defaults(run=run_correlation_compare)

    cam = commands.add_parser("cam", help="top-k channel activation maps, baseline vs C3")
    cam.add_argument("baseline", help="baseline checkpoint")
    cam.add_argument("c3", help="C3 checkpoint")
    cam.add_argument("--images", type=positive_int, default=4, help="how many images (default 4)")
    cam.add_argument("--topk", type=positive_int, default=6, help="channels per image (default 6)")
    cam.add_argument("--split", choices=SPLITS, default="test")
    cam.add_argument("--data-root", help="where the data set is (default: this machine's data.root, C3EXP_DATA or data/)")
    cam.add_argument("--out", help="output PNG (default: <common parent>/cam_compare.png)")
    cam.set_defaults(run=run_cam)

    boxes = commands.add_parser("boxes", help="ground-truth and detected boxes, baseline vs C3")
    boxes.add_argument("baseline", help="baseline detection checkpoint")
    boxes.add_argument("c3", help="C3 detection checkpoint")
    boxes.add_argument("--images", type=positive_int, default=4, help="how many images (default 4)")
    boxes.add_argument("--score", type=float, default=0.5, help="the lowest score of a drawn detection (default 0.5)")
    boxes.add_argument("--split", choices=SPLITS, default="test")
    boxes.add_argument("--data-root", help="where the data set is (default: this machine's data.root, C3EXP_DATA or data/)")
    boxes.add_argument("--out", help="output PNG (default: <common parent>/boxes_compare.png)")
    boxes.set_defaults(run=run_boxes)
    return parser


def main(argv: Sequence[str] | None = None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)


if __name__ == "__main__":
    run_reporting_user_errors(main)
