"""EVOS pixel sampler for nerfstudio: picks rays from the datamanager's fitness store.

It overrides the collate step (not ``sample_method``) because only there does it see
``image_batch["image_idx"]``, the absolute camera indices its fitness is keyed by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Type

import torch
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from torch import Tensor

from evos_nerf.core.selection import CrossoverMethod
from evos_nerf.core.sharding import mutant_count
from evos_nerf.core.store import FitnessStore, Ranking, UnvisitedPrior

Strategy = Literal["evos", "uniform", "topk", "staleness", "edges"]


@dataclass
class EvosPixelSamplerConfig(PixelSamplerConfig):
    """EVOS selection for rays. Every flag here is a CLI flag under --pipeline.datamanager.pixel-sampler."""

    _target: Type = field(default_factory=lambda: EvosPixelSampler)
    strategy: Strategy = "evos"
    """evos; uniform (baseline); topk (hard mining: top error, no crossover, no mutation); staleness
    (coverage control: longest-untrained first); edges (edge-prior control: ground-truth Laplacian only)."""
    selection_ratio: float = 0.2
    """Share of all training pixels in the candidate pool built at each key iteration."""
    mutation_ratio: float = 0.25
    """Share of every batch drawn uniformly from valid pixels outside the pool (0 disables)."""
    crossover: CrossoverMethod = "select"
    """Frequency-guided crossover of error and edge-weighted error: select, add, none."""
    stale_correction: bool = True
    """Rescale cached errors by how much the mean training error fell since they were measured."""
    unvisited_prior: UnvisitedPrior = "neighbourhood"
    """Fitness of never-visited pixels when ranking (evos, topk): neighbourhood (mean error of their
    measured block neighbours, shrunk toward their image's mean) or mean (the global mean error)."""
    prior_block: int = 16
    """Block size in pixels for the neighbourhood prior."""
    refresh_budget: int = 4096
    """Rays re-measured (no-grad) at each key iteration: the stalest members of the pool."""
    init_interval: int = 100
    """Key-iteration interval at step 0 (lin_dec schedule, in steps)."""
    end_interval: int = 50
    """Key-iteration interval at the last step."""
    key_schedule: Literal["lin_dec", "fixed"] = "lin_dec"
    fitness_dtype: Literal["float16", "float32"] = "float16"
    """Storage of the per-pixel fitness (2 bytes per pixel by default)."""
    seed: Optional[int] = None
    """Selection RNG seed; None uses the trainer's --machine.seed (+ rank)."""

    def validate(self) -> "EvosPixelSamplerConfig":
        from evos_nerf.core.schedules import check_ratio

        check_ratio("pixel-sampler.selection-ratio", self.selection_ratio)
        check_ratio("pixel-sampler.mutation-ratio", self.mutation_ratio, allow_zero=True)
        if self.init_interval < 1 or self.end_interval < 1:
            raise ValueError("pixel-sampler key-iteration intervals must be >= 1")
        if self.prior_block < 1:
            raise ValueError(f"pixel-sampler.prior-block must be >= 1, got {self.prior_block}")
        if self.refresh_budget < 0:
            raise ValueError(f"pixel-sampler.refresh-budget must be >= 0, got {self.refresh_budget}")
        return self

    @property
    def effective_mutation_ratio(self) -> float:
        return 0.0 if self.strategy == "topk" else self.mutation_ratio

    @property
    def ranking(self) -> Optional[Ranking]:
        return None if self.strategy == "uniform" else self.strategy  # type: ignore[return-value]


def batch_positions(image_idx: Tensor, num_images: int) -> Tensor:
    """Absolute camera index -> position in an image batch (-1 where a camera is absent)."""
    pos = torch.full((num_images,), -1, dtype=torch.long)
    pos[image_idx.cpu().long()] = torch.arange(image_idx.numel())
    return pos


class EvosPixelSampler(PixelSampler):
    """Selects rays with the fitness store; the store lives on the datamanager (an nn.Module)."""

    config: EvosPixelSamplerConfig

    def __init__(self, config: EvosPixelSamplerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        config.validate()
        self.store: Optional[FitnessStore] = None
        self.generator: Optional[torch.Generator] = None
        self.controls = None
        """Live selection/mutation ratios and pause switch (the datamanager's EvosControls)."""
        self.mutation_scale = 1.0
        """Factor on the mutant count that keeps mutation uniform across shards (1 on one rank)."""
        self.last_num_mutants = 0
        self._flat_cache: Dict[str, Tensor] = {}

    def attach(self, store: FitnessStore, generator: torch.Generator, controls=None) -> None:
        self.store, self.generator, self.controls = store, generator, controls

    def select(self, batch_size: int) -> Tensor:
        """Flat pixel indices for one batch."""
        assert self.store is not None and self.generator is not None, "sampler used before attach()"
        paused = self.controls is not None and self.controls.paused
        if self.config.strategy == "uniform" or paused:
            self.last_num_mutants = batch_size
            return self.store.sample_uniform(batch_size, self.generator)
        share = self.config.mutation_ratio if self.controls is None else self.controls.mutation_ratio
        if self.config.strategy == "topk":
            share = 0.0
        num_mutants = mutant_count(batch_size, share, self.mutation_scale, self.generator)
        flat, self.last_num_mutants = self.store.sample(batch_size, share, self.generator, num_mutants)
        return flat

    def _positions(self, image_idx: Tensor) -> Tensor:
        assert self.store is not None
        return batch_positions(image_idx, self.store.num_cameras)

    def collate_image_dataset_batch(self, batch: Dict, num_rays_per_batch: int, keep_full_image: bool = False):
        indices = self.store.unflatten(self.select(num_rays_per_batch)).cpu()
        c, y, x = indices.unbind(-1)
        pos = self._positions(batch["image_idx"])[c]
        if bool((pos < 0).any()):
            raise RuntimeError(
                "EVOS selected a camera missing from the image batch; "
                "set --pipeline.datamanager.train-num-images-to-sample-from -1"
            )
        collated = {k: v[pos, y, x] for k, v in batch.items() if k != "image_idx" and v is not None}
        collated["indices"] = indices
        if keep_full_image:
            collated["full_image"] = batch["image"]
        return collated

    def collate_image_dataset_batch_list(self, batch: Dict, num_rays_per_batch: int, keep_full_image: bool = False):
        """Variable resolutions: gather from per-key flat concatenations in camera order."""
        flat = self.select(num_rays_per_batch).cpu()
        indices = self.store.unflatten(flat).cpu()
        # Concatenate in the store's camera order, so a store flat index addresses the concatenation.
        order = self._positions(batch["image_idx"])[self.store.cameras.cpu()]
        collated = {}
        for key, value in batch.items():
            if key == "image_idx" or value is None:
                continue
            if isinstance(value, list):
                if key not in self._flat_cache:
                    self._flat_cache[key] = torch.cat([value[int(i)].reshape(-1, value[int(i)].shape[-1]) for i in order])
                collated[key] = self._flat_cache[key][flat]
            else:
                pos = self._positions(batch["image_idx"])[indices[:, 0]]
                collated[key] = value[pos, indices[:, 1], indices[:, 2]]
        collated["indices"] = indices
        if keep_full_image:
            collated["full_image"] = batch["image"]
        return collated
