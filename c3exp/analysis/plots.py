"""The analysis figures, on an explicit Agg canvas: safe in callbacks, threads and headless machines; no pyplot."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from c3exp.analysis.cam import ChannelMaps
from c3exp.utils.atomic import write_with

def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG beside `path` and rename it (a symlink there is replaced, never written through)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches itself to fig: savefig renders with Agg
    return write_with(path, lambda file: fig.savefig(file, format="png", dpi=80))


def draw_heatmap_grid(fig: Figure | SubFigure, matrices: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str],
                      column_titles: Sequence[str], title: str) -> None:
    """A rows x columns grid of correlation matrices on one shared [-1, 1] colour scale; grey: constant channels."""
    axes = fig.subplots(len(matrices), len(column_titles), squeeze=False)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.75")
    for row, (label, row_matrices) in enumerate(zip(row_labels, matrices)):
        for ax, column_title, matrix in zip(axes[row], column_titles, row_matrices):
            image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(column_title if not label else f"{label}: {column_title}", fontsize=9)
            ax.set(xlabel="channel", ylabel="channel")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="Pearson correlation", shrink=0.8)
    fig.suptitle(title)


def correlation_heatmaps(matrices: Sequence[np.ndarray], titles: Sequence[str], title: str, path: str | Path) -> Path:
    """One row of correlation heatmaps (e.g. the stages of one network), saved as a PNG."""
    fig = Figure(figsize=(3.6 * len(matrices) + 1.2, 3.6), layout="constrained")
    draw_heatmap_grid(fig, [list(matrices)], [""], titles, title)
    return save_figure(fig, path)


@dataclass(frozen=True)
class Band:
    """A curve's mean and standard deviation over runs (seeds), per x value."""

    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    runs: int

    def limits(self, low: float = -np.inf, high: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """mean - std and mean + std, clipped to [low, high]: an accuracy band never leaves 0-100%."""
        return np.clip(self.mean - self.std, low, high), np.clip(self.mean + self.std, low, high)


def accuracy_curves(bands: Mapping[str, Band], title: str, path: str | Path, ylabel: str) -> Path:
    """A validation metric (%) per epoch; per label a mean line, a ± std band in 0-100."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, band in bands.items():
        (line,) = ax.plot(band.x, band.mean, marker="o", markersize=3, label=f"{label} (n={band.runs})")
        ax.fill_between(band.x, *band.limits(0.0, 100.0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(title="attention (mean ± std over seeds)")
    return save_figure(fig, path)


@dataclass(frozen=True)
class CorrelationHistory:
    """One run's recorded correlations: per epoch, the mean |corr| and the matrix of every stage."""

    label: str
    epochs: list[int]  # 0-based, as Lightning numbers them
    mean_abs: list[list[float]]  # [epoch][stage]
    matrices: list[list[np.ndarray]]  # [epoch][stage]


def correlation_over_training(histories: Sequence[CorrelationHistory], stage: int, heatmap_epochs: Sequence[int],
                              path: str | Path) -> Path:
    """Fig. 4: mean |corr| per stage across epochs (top) and the `stage` matrices at a few epochs (bottom)."""
    stages = len(histories[0].mean_abs[0])
    fig = Figure(figsize=(max(3.2 * stages, 2.6 * len(heatmap_epochs) + 1.5), 3.0 + 2.5 * len(histories)),
                 layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 0.95 * len(histories)])
    axes = top.subplots(1, stages, squeeze=False)[0]
    for index, ax in enumerate(axes):
        for history in histories:
            values = [row[index] for row in history.mean_abs]
            ax.plot(history.epochs, values, marker="o", markersize=3, label=history.label)
        ax.set(title=f"stage {index + 1} output", xlabel="epoch")  # epochs 0-based, as Lightning numbers them
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("mean |correlation|")
    top.suptitle("Channel correlation during training: mean |corr| between distinct channels "
                 "(lower: more diverse channels)", fontsize=10)
    matrices = [[h.matrices[h.epochs.index(epoch)][stage - 1] for epoch in heatmap_epochs] for h in histories]
    draw_heatmap_grid(bottom, matrices, [h.label for h in histories], [f"after epoch {e}" for e in heatmap_epochs],
                      f"Stage {stage} channel correlation matrices")
    return save_figure(fig, path)


def show_image(ax, image: np.ndarray, extent: tuple[float, float, float, float] | None = None) -> None:
    ax.imshow(image, interpolation="nearest", extent=extent)
    ax.set(xticks=[], yticks=[])


def cam_comparison(images: np.ndarray, captions: Sequence[str], panels: Mapping[str, ChannelMaps], path: str | Path,
                   input_title: str = "input") -> Path:
    """Fig. 6: each image (rows, (N, H, W, 3) in [0, 1], captioned), then the top-k channel maps of every network."""
    count, k = len(images), next(iter(panels.values())).channels.shape[1]
    fig = Figure(figsize=(1.05 * (1 + k * len(panels)) + 0.9, 1.1 * count + 0.8), layout="constrained")
    columns = fig.subfigures(1, 1 + len(panels), width_ratios=[1.25] + [k] * len(panels))
    for ax, image, caption in zip(columns[0].subplots(count, 1, squeeze=False)[:, 0], images, captions):
        show_image(ax, image)
        ax.set_title(caption, fontsize=7)
    columns[0].suptitle(input_title, fontsize=9)
    for column, (label, maps) in zip(columns[1:], panels.items()):
        axes = column.subplots(count, k, squeeze=False)
        for (row, rank), ax in np.ndenumerate(axes):
            show_image(ax, images[row].mean(axis=-1, keepdims=True).repeat(3, axis=-1))
            overlay = ax.imshow(maps.maps[row, rank].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                                interpolation="nearest")
            ax.set_title(f"ch {int(maps.channels[row, rank])}", fontsize=7)
        column.suptitle(f"{label}: top-{k} channels of the last stage (by mean activation)", fontsize=10)
    fig.colorbar(overlay, ax=axes.ravel().tolist(), label="activation (each map scaled to [0, 1])", shrink=0.8)
    return save_figure(fig, path)


def box_comparison(images: Sequence[np.ndarray], columns: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
                   class_names: Sequence[str], path: str | Path) -> Path:
    """A row per image ((H, W, 3) in [0, 1]); per column and image `boxes` (x1, y1, x2, y2 px), `labels`, `scores`."""
    count, colours = len(images), matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(2.6 * len(columns), 2.5 * count + 0.5), layout="constrained")
    for panel, (title, rows) in zip(fig.subfigures(1, len(columns), squeeze=False)[0], columns.items()):
        for ax, image, found in zip(panel.subplots(count, 1, squeeze=False)[:, 0], images, rows):
            height, width = image.shape[:2]
            show_image(ax, image, extent=(0, width, height, 0))  # pixel edges at integers, as the boxes count them
            scores, labels = found.get("scores"), np.asarray(found["labels"]).tolist()
            for index, ((x1, y1, x2, y2), label) in enumerate(zip(np.asarray(found["boxes"]).tolist(), labels)):
                colour = colours(label % colours.N)
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2))
                name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
                text = name if scores is None else f"{name} {float(scores[index]):.2f}"
                ax.text(x1, y1, text, fontsize=6, color="white", va="top", clip_on=True,
                        bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
            ax.set(xlim=(0, width), ylim=(height, 0))
            ax.set_title(f"{len(labels)} {'objects' if scores is None else 'detections'}", fontsize=8)
        panel.suptitle(title, fontsize=9)
    return save_figure(fig, path)
