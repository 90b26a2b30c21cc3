"""The 11-byte fitness store's ranking as it was at commit 94f6da5 (before issue 11), frozen as a reference.

fp16 fitness, int32 measurement step, fp16 edge prior, bool valid mask (the visit counts played no
part in ranking). Only what ranking reads is kept: the per-step error curve, the corrected fitness
(stale errors rescaled by the smoothed curve, never-visited pixels from the neighbourhood prior with
a 1e-3 random jitter) and ``rank_pixels`` with the ordered crossover and torch.topk.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.core.neighbourhood import neighbourhood_estimate
from evos_nerf.core.selection import crossover, top_k
from evos_nerf.core.store import pixel_offsets


class LegacyStore:
    def __init__(self, sizes: Sequence[Tuple[int, int]]) -> None:
        self.heights = torch.tensor([h for h, _ in sizes])
        self.widths = torch.tensor([w for _, w in sizes])
        self.offsets = pixel_offsets(self.heights * self.widths)
        n = int(self.offsets[-1])
        self.fitness = torch.zeros(n, dtype=torch.float16)
        self.last_step = torch.full((n,), -1, dtype=torch.int32)
        self.edges = torch.ones(n, dtype=torch.float16)
        self.valid = torch.ones(n, dtype=torch.bool)
        self.error_curve: List[Tuple[int, float]] = []

    def initialise(self, images, masks=None) -> None:
        for i, image in enumerate(images):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            lap = laplacian_of_rgb(image[..., :3].float()) / 255.0
            self.edges[start:end] = (lap**2).reshape(-1).half()
            if masks is not None and masks[i] is not None:
                self.valid[start:end] = masks[i].reshape(-1).bool()
        mean = float(self.edges.float()[self.valid].mean())
        self.edges.copy_((self.edges.float() / max(mean, 1e-12)).half())

    def update(self, flat: Tensor, error: Tensor, step: int) -> None:
        self.fitness[flat] = error.half()
        self.last_step[flat] = step
        self.error_curve.append((int(step), float(error.mean())))

    def _error_level(self, steps: Tensor) -> Tensor:
        curve = torch.tensor(self.error_curve, dtype=torch.float32)
        window = min(20, curve.shape[0])
        kernel = torch.ones(1, 1, window) / window
        padded = torch.cat([curve[:1, 1].repeat(window - 1), curve[:, 1]])
        level = torch.nn.functional.conv1d(padded.view(1, 1, -1), kernel).view(-1).clamp_min(1e-12)
        pos = torch.searchsorted(curve[:, 0].contiguous(), steps.float().contiguous(), right=True) - 1
        return level[pos.clamp(0, level.numel() - 1)]

    def corrected_fitness(self, stale_correction: bool, generator: torch.Generator) -> Tensor:
        e = self.fitness.float()
        visited = self.last_step >= 0
        if stale_correction and bool(visited.any()):
            now = torch.tensor([self.error_curve[-1][0]])
            ratio = self._error_level(now) / self._error_level(self.last_step.clamp_min(0))
            e = torch.where(visited, e * ratio.clamp(max=1.0), e)
        measured = visited & self.valid
        prior = float(e[measured].mean())
        estimate = neighbourhood_estimate(e, measured, self.offsets, self.heights, self.widths, prior, 16)
        jitter = torch.rand(e.shape, generator=generator)
        return torch.where(visited, e, estimate * (1.0 + 1e-3 * jitter))

    def rank_pixels(self, pool_size: int, ranking: str, generator: torch.Generator, stale_correction: bool = True):
        neg_inf = torch.tensor(float("-inf"))
        e = self.corrected_fitness(stale_correction and ranking == "evos", generator)
        if ranking == "topk":
            return top_k(torch.where(self.valid, e, neg_inf), pool_size)
        hf = e * self.edges.float()
        p = float(e[self.valid].sum()) / float(e[self.valid].sum() + hf[self.valid].sum())
        return crossover(torch.where(self.valid, e, neg_inf), torch.where(self.valid, hf, neg_inf), pool_size,
                         "select", balance=p).indices
