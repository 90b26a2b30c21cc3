"""How an image fit's selection evolves: maps as PNGs at every log step, a contact sheet and a GIF.

Written by ``evos-image fit --maps`` under ``RUN/maps/``. At each log step:

* ``selection_STEP.png``: the *selection share* of the last log interval, i.e. the fraction of its
  iterations that trained each pixel (viridis, 0 dark to 1 bright). This is what moves as EVOS
  evolves; the cumulative count in ``heatmap.png`` blurs it out.
* ``fitness_STEP.png``: the strategy's fitness map at its last key iteration / profile (magma, log10,
  scaled per map so the error's location stays visible as it falls by decades); strategies
  without one (full, uniform, expansive) have none.

At the end, ``maps_sheet.png`` lays out up to ``SHEET_COLUMNS`` of these steps side by side and
``selection.gif`` animates every step (fitness | selection).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from matplotlib.figure import Figure
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from evos_nerf.heatmaps import colorize_counts, colorize_fitness, side_by_side, to_uint8  # noqa: E402
from evos_nerf.image.report import save_png  # noqa: E402
from evos_nerf.io import atomic_path  # noqa: E402

SHEET_COLUMNS = 8
FRAME_SIDE = 192
"""Frames kept for the sheet and GIF are resized so their longer side is this many pixels."""
GIF_FRAME_MS = 400


@dataclass
class _Frame:
    step: int
    selection: Tensor
    """[h, w, 3] in [0, 1], resized to FRAME_SIDE."""
    fitness: Optional[Tensor]


def _resize(image: Tensor, side: int) -> Tensor:
    """[H, W, 3] -> longer side ``side`` (nearest: pixels stay crisp, shares stay exact)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="nearest")[0].permute(1, 2, 0)


class SelectionMaps:
    """Records the maps of one (image, strategy) run; call ``record`` at log steps, ``finish`` at the end."""

    def __init__(self, out_dir: Path, height: int, width: int) -> None:
        self.dir = Path(out_dir) / "maps"
        self.height, self.width = height, width
        self.frames: List[_Frame] = []
        self._last_step = 0
        self._last_counts: Optional[Tensor] = None

    def record(self, step: int, counts: Tensor, fitness: Optional[Tensor]) -> None:
        """``counts``: cumulative times each pixel was trained ([N] or [H, W]); ``fitness``: the
        strategy's current fitness map or None."""
        counts = counts.detach().reshape(self.height, self.width).float().cpu()
        previous = self._last_counts if self._last_counts is not None else torch.zeros_like(counts)
        share = (counts - previous) / max(step - self._last_step, 1)
        self._last_counts, self._last_step = counts.clone(), step
        selection = colorize_counts(share, high=1.0)
        save_png(self.dir / f"selection_{step:06d}.png", selection)
        fitness_rgb = None
        if fitness is not None:
            fitness_rgb = colorize_fitness(fitness.detach().reshape(self.height, self.width).float().cpu())
            save_png(self.dir / f"fitness_{step:06d}.png", fitness_rgb)
        self.frames.append(_Frame(step, _resize(selection, FRAME_SIDE),
                                  None if fitness_rgb is None else _resize(fitness_rgb, FRAME_SIDE)))

    def finish(self, title: str) -> List[Path]:
        """Write the contact sheet and the GIF; returns their paths (none if nothing was recorded)."""
        if not self.frames:
            return []
        return [self._sheet(self.dir / "maps_sheet.png", title), self._gif(self.dir / "selection.gif")]

    def _sheet(self, path: Path, title: str) -> Path:
        picks = np.unique(np.linspace(0, len(self.frames) - 1, min(SHEET_COLUMNS, len(self.frames))).round().astype(int))
        frames = [self.frames[i] for i in picks]
        rows = [("selection share", [f.selection for f in frames])]
        if all(f.fitness is not None for f in frames):
            rows.insert(0, ("fitness (log10)", [f.fitness for f in frames]))
        fig = Figure(figsize=(1.9 * len(frames), 2.0 * len(rows) + 0.4))
        axes = fig.subplots(len(rows), len(frames), squeeze=False)
        for r, (name, images) in enumerate(rows):
            for c, (frame, image) in enumerate(zip(frames, images)):
                ax = axes[r][c]
                ax.imshow(image.numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"step {frame.step}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(name, fontsize=8)
        fig.suptitle(title, fontsize=9)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        return path

    def _gif(self, path: Path) -> Path:
        images = []
        for frame in self.frames:
            panels = [frame.fitness, frame.selection] if frame.fitness is not None else [frame.selection]
            images.append(Image.fromarray(to_uint8(side_by_side(panels))))
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
        return path
