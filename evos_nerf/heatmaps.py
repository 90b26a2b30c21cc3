"""Per-pixel fitness and selection counts as colour images, for people to look at.

The viewer panel, the tensorboard / wandb logging and the image CLI all call these, so a map
means the same thing wherever it is seen. Fitness (a squared error) spans decades, so it is
shown on a log10 scale; counts are linear. A range is computed over a *set* of maps and then
applied to each, so that cameras (or log steps) shown side by side are comparable.
Framework-free: tensors in, tensors or arrays out.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

FITNESS_COLORMAP = "magma"
"""Dark = low (or never measured) error, bright = high error."""
COUNT_COLORMAP = "viridis"
"""Dark = never trained (starved), bright = trained most often."""

_SAMPLE_LIMIT = 1 << 20
"""Percentiles are taken on at most this many values (a strided subsample of huge stores)."""


def _lut(name: str) -> Tensor:
    return torch.from_numpy(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]).float()


def apply_colormap(values01: Tensor, name: str) -> Tensor:
    """[H, W] values in [0, 1] (anything else is clamped, NaN -> 0) -> [H, W, 3] float RGB in [0, 1]."""
    values = torch.nan_to_num(values01.detach().float().cpu(), nan=0.0).clamp(0.0, 1.0)
    return _lut(name)[(values * 255.0).round().long()]


def _log10_fitness(fitness: Tensor) -> Tensor:
    # Never-measured pixels are 0 in fitness maps; they take the floor of the range (dark).
    return torch.log10(fitness.detach().float().cpu().clamp_min(1e-30))


def fitness_range(maps: Sequence[Tensor]) -> Tuple[float, float]:
    """(low, high) log10 fitness over a set of maps: the 1st and 99th percentiles of measured pixels.

    Percentiles rather than min / max, so one outlier ray does not wash out every other pixel.
    Huge sets (hundreds of full-HD cameras) are subsampled with a stride before the percentiles.
    """
    total = sum(m.numel() for m in maps)
    stride = total // _SAMPLE_LIMIT + 1
    values = [m.detach().reshape(-1)[::stride].float().cpu() for m in maps]
    flat = torch.cat(values) if values else torch.zeros(0)
    flat = flat[torch.isfinite(flat) & (flat > 0)]
    if flat.numel() == 0:
        return -8.0, 0.0
    low, high = torch.quantile(torch.log10(flat), torch.tensor([0.01, 0.99])).tolist()
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return float(low), float(high)


def colorize_fitness(fitness: Tensor, value_range: Optional[Tuple[float, float]] = None) -> Tensor:
    """[H, W] fitness -> [H, W, 3] RGB in [0, 1] on a log10 scale (``value_range`` in log10 units)."""
    low, high = value_range if value_range is not None else fitness_range([fitness])
    return apply_colormap((_log10_fitness(fitness) - low) / max(high - low, 1e-12), FITNESS_COLORMAP)


def count_range(maps: Iterable[Tensor]) -> float:
    """Largest count over a set of maps (at least 1, so an all-zero map stays dark)."""
    return max([1.0] + [float(m.detach().float().max()) for m in maps if m.numel()])


def colorize_counts(counts: Tensor, high: Optional[float] = None) -> Tensor:
    """[H, W] selection counts -> [H, W, 3] RGB in [0, 1], linear from 0 to ``high``."""
    high = high if high is not None else count_range([counts])
    return apply_colormap(counts.detach().float().cpu() / max(high, 1e-12), COUNT_COLORMAP)


def to_uint8(image01: Tensor) -> np.ndarray:
    return (image01.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def figure_to_array(fig) -> np.ndarray:
    """Render a matplotlib figure to [H, W, 3] float in [0, 1] (what nerfstudio's writer takes)."""
    canvas = FigureCanvasAgg(fig)  # no pyplot, no global backend switch
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[..., :3].astype(np.float32) / 255.0


def histogram_image(counts: Tensor, bin_edges: Tensor, title: str = "EVOS fitness histogram") -> np.ndarray:
    """Bar chart of a fitness histogram whose ``bin_edges`` are fitness values on a log-spaced grid
    (what the datamanager keeps), as [H, W, 3] float in [0, 1]."""
    counts_np = counts.detach().double().cpu().numpy()
    edges = bin_edges.detach().double().cpu().numpy()
    fig = Figure(figsize=(5, 3.2), dpi=100)
    ax = fig.subplots()
    ax.bar(edges[:-1], counts_np, width=np.diff(edges), align="edge", color="#b5367a", edgecolor="none")
    ax.set_xscale("log")
    ax.set_xlabel("fitness (squared RGB error)")
    ax.set_ylabel("pixels")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_array(fig)


def side_by_side(images: Sequence[Tensor], gap: int = 4) -> Tensor:
    """Concatenate [H, W, 3] images of equal height with a white gap between them."""
    height = images[0].shape[0]
    parts = []
    for i, image in enumerate(images):
        assert image.shape[0] == height, "side_by_side needs equal heights"
        if i:
            parts.append(torch.ones(height, gap, 3))
        parts.append(image.float().cpu())
    return torch.cat(parts, dim=1)
