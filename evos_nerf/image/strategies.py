"""Sampling strategies for image fitting: EVOS and the baselines of the paper's Table 1.

Each strategy answers one question per iteration, "which pixels do we train on?", and may look
at full predictions when it asks for them. All of them share the sample-ratio schedule r_t, so
they see the same budget of pixels, and all draws go through one seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from evos_nerf.core import Evolution, EvolutionConfig, StepPlan, laplacian_fitness, sample_ratio, top_k
from evos_nerf.image.cfs import CrossFrequencySupervision
from evos_nerf.image.signal import ImageSignal

STRATEGIES = ("full", "uniform", "evos", "evos-nocfs", "int", "int-dense", "expansive")

PredictAll = Callable[[], Tensor]
"""No-grad forward over every pixel, [N, 3], for strategies that profile the whole signal."""


class Strategy:
    """Base: every iteration trains on all pixels, with plain MSE."""

    name = "full"

    def __init__(self, config: EvolutionConfig, num_samples: int, total: int, generator: torch.Generator):
        self.config = config
        self.num_samples = num_samples
        self.total = total
        self.generator = generator

    def ratio(self, t: int) -> float:
        return sample_ratio(t, self.total, self.config.ratio, self.config.ratio_schedule)

    def budget(self, t: int) -> int:
        return max(1, int(math.floor(self.ratio(t) * self.num_samples + 1e-9)))

    def plan(self, t: int, predict_all: PredictAll) -> StepPlan:
        return StepPlan(t, True, None, self.num_samples, 0)

    def observe(self, t: int, plan: StepPlan, full_prediction: Optional[Tensor]) -> None:
        """Called after each step; ``full_prediction`` (detached) is given when the step used all pixels."""

    def cfs_loss(self, t: int, plan: StepPlan, prediction: Tensor) -> Optional[Tensor]:
        """Cross-frequency supervision term for this step (unweighted), or None."""
        return None

    def fitness_map(self) -> Optional[Tensor]:
        return None


class Uniform(Strategy):
    """Uniform random r_t * N pixels, redrawn each iteration (Table 1 'Uniform')."""

    name = "uniform"

    def plan(self, t: int, predict_all: PredictAll) -> StepPlan:
        k = self.budget(t)
        if k >= self.num_samples:
            return StepPlan(t, True, None, self.num_samples, 0)
        idx = torch.randperm(self.num_samples, generator=self.generator)[:k]
        return StepPlan(t, False, idx, 0, k)


class Evos(Strategy):
    """EVOS (Zhang et al., "EVOS: Efficient Implicit Neural Training via EVOlutionary Selector", CVPR 2025).

    Key iterations train on all pixels and rank them by frequency-guided crossover of L2 and
    Laplacian error; other iterations train on the cached survivors plus fresh uniform mutants.
    """

    name = "evos"

    def __init__(self, config, num_samples, total, generator, signal: ImageSignal, targets: Tensor):
        super().__init__(config, num_samples, total, generator)
        self.evolution = Evolution(config, num_samples, total, generator)
        self.signal = signal
        self.targets = targets
        self.cfs = CrossFrequencySupervision(signal)
        self.target_laplacian = self.cfs.target_laplacian
        self.last_fitness: Optional[Tensor] = None

    def plan(self, t: int, predict_all: PredictAll) -> StepPlan:
        return self.evolution.plan(t)

    def observe(self, t: int, plan: StepPlan, full_prediction: Optional[Tensor]) -> None:
        if not plan.key or full_prediction is None:
            return
        if self.config.cfs_weight > 0:
            self.cfs.remember(full_prediction)  # stale neighbours for the steps until the next key iteration
        fitness = ((full_prediction - self.targets) ** 2).mean(-1)
        pred01 = self.signal.decode(full_prediction).reshape(self.signal.height, self.signal.width, 3)
        lam = self.config.crossover_lambda if self.config.crossover_lambda > 0 else 1e-5
        hf = laplacian_fitness(pred01, self.target_laplacian, lam).reshape(-1)
        self.evolution.evolve(t, fitness, hf if self.config.crossover != "none" else None)
        self.last_fitness = fitness

    def cfs_loss(self, t: int, plan: StepPlan, prediction: Tensor) -> Optional[Tensor]:
        """CFS on every key iteration and, until cfs_until, on the selected pixels of the others (EVOS §2.6)."""
        if not self.evolution.cfs_active(t, plan.key):
            return None
        if plan.indices is None:
            return self.cfs.full_loss(prediction)
        if not self.cfs.ready:  # no full prediction yet: the term is zero
            return None
        return self.cfs.selected_loss(prediction, plan.indices)

    def fitness_map(self) -> Optional[Tensor]:
        return self.last_fitness


class IntIncremental(Strategy):
    """INT (Zhang et al., "Nonparametric Teaching of Implicit Neural Representations", ICML 2024).

    Profiles every pixel with a no-grad forward and trains on the top r_t * N by L1 error, reusing
    that subset between profiles. 'incremental' profiles every step for the first quarter of the
    run, then every 10/20/30/40/50 steps in equal blocks (EVOS's reproduction, scaled from T = 5000);
    'dense' profiles every step.
    """

    name = "int"

    def __init__(self, config, num_samples, total, generator, targets: Tensor, dense: bool = False):
        super().__init__(config, num_samples, total, generator)
        self.targets = targets
        self.dense = dense
        self.name = "int-dense" if dense else "int"
        self.subset: Optional[Tensor] = None
        self.last_fitness: Optional[Tensor] = None

    def profile_interval(self, t: int) -> int:
        if self.dense:
            return 1
        progress = t / self.total * 5000.0
        if progress < 1250:
            return 1
        return min(50, 10 * (1 + int((progress - 1250) // 750)))

    def plan(self, t: int, predict_all: PredictAll) -> StepPlan:
        k = self.budget(t)
        if self.subset is None or t % self.profile_interval(t) == 0:
            error = (predict_all() - self.targets).abs().sum(-1)
            self.subset = top_k(error, k)
            self.last_fitness = error
        return StepPlan(t, False, self.subset[:k], self.subset[:k].numel(), 0)

    def fitness_map(self) -> Optional[Tensor]:
        return self.last_fitness


class Expansive(Strategy):
    """Expansive Supervision (Zhang et al., "Expansive Supervision for Neural Radiance Fields", ICME 2025).

    As EVOS's image reproduction runs it: anchors are dilated Canny edges of the ground truth,
    thinned at random to 0.5 * r0 * N pixels, trained every step; the rest of the budget is
    uniform "source" pixels. Plain MSE, no expansive loss re-weighting.
    """

    name = "expansive"

    def __init__(self, config, num_samples, total, generator, signal: ImageSignal):
        super().__init__(config, num_samples, total, generator)
        self.anchors = self._anchors(signal, int(0.5 * config.ratio * num_samples))
        self.is_anchor = torch.zeros(num_samples, dtype=torch.bool)
        self.is_anchor[self.anchors] = True
        self.sources = (~self.is_anchor).nonzero().squeeze(-1)

    def _anchors(self, signal: ImageSignal, count: int) -> Tensor:
        from scipy.ndimage import binary_dilation
        from skimage.color import rgb2gray
        from skimage.feature import canny

        edges = canny(rgb2gray(signal.rgb.cpu().numpy()), sigma=1.0)
        for _ in range(8):  # grow the edge band until it covers the anchor area
            if edges.sum() >= count:
                break
            edges = binary_dilation(edges)
        idx = torch.from_numpy(np.flatnonzero(edges.reshape(-1)))
        if idx.numel() > count:
            idx = idx[torch.randperm(idx.numel(), generator=self.generator)[:count]]
        return idx

    def plan(self, t: int, predict_all: PredictAll) -> StepPlan:
        k = self.budget(t)
        num_sources = max(0, min(k - self.anchors.numel(), self.sources.numel()))
        pick = torch.randperm(self.sources.numel(), generator=self.generator)[:num_sources]
        idx = torch.cat([self.anchors, self.sources[pick]])
        return StepPlan(t, False, idx, self.anchors.numel(), num_sources)


def build_strategy(
    name: str,
    config: EvolutionConfig,
    signal: ImageSignal,
    targets: Tensor,
    total: int,
    generator: torch.Generator,
) -> Strategy:
    """Strategy by name; 'evos-nocfs' is EVOS with the CFS loss off (the crossover keeps lambda)."""
    config.validate()
    n = signal.num_samples
    builders: Dict[str, Callable[[], Strategy]] = {
        "full": lambda: Strategy(config, n, total, generator),
        "uniform": lambda: Uniform(config, n, total, generator),
        "evos": lambda: Evos(config, n, total, generator, signal, targets),
        "evos-nocfs": lambda: _renamed(
            Evos(_without_cfs(config), n, total, generator, signal, targets), "evos-nocfs"
        ),
        "int": lambda: IntIncremental(config, n, total, generator, targets),
        "int-dense": lambda: IntIncremental(config, n, total, generator, targets, dense=True),
        "expansive": lambda: Expansive(config, n, total, generator, signal),
    }
    if name not in builders:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return builders[name]()


def _without_cfs(config: EvolutionConfig) -> EvolutionConfig:
    from dataclasses import replace

    return replace(config, cfs_weight=0.0)


def _renamed(strategy: Strategy, name: str) -> Strategy:
    strategy.name = name
    return strategy
