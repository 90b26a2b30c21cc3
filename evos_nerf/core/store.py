"""Per-pixel fitness across many training images: EVOS adapted to rays (NeRF).

One value per training pixel, keyed by absolute (camera, y, x) through a flat index with per-image
offsets, so images of different resolutions share one store. It is an ``nn.Module`` only so that
its tensors travel with ``.to(device)`` and land in checkpoints as buffers; it has no parameters.

How the three EVOS mechanisms map to rays (our adaptation; no public EVOS NeRF code exists):

* Sparse fitness evaluation: every trained ray refreshes its own pixel's error for free. At key
  iterations the store ranks all pixels once and builds a candidate pool; per-step selection then
  draws from that pool, so its cost is O(batch), not O(pixels). Cached errors go stale as the
  model improves, so ranking rescales each error by how much the mean training error has fallen
  since it was recorded, and callers can re-measure a budget of the stalest pool members.
* Frequency-guided crossover: the high-frequency parent ranks pixels by ``e * h``, the error
  weighted by the ground truth's normalised squared Laplacian (mean 1). Both parents are then in
  the same units, so the adaptive balance p = mean(e) / (mean(e) + mean(e * h)) stays meaningful
  (it falls below 0.5 exactly when error concentrates on edges) instead of collapsing.
* Augmented unbiased mutation: a fixed share of every batch is drawn uniformly from all valid
  pixels outside the pool, which also explores never-visited pixels. Never-visited pixels rank
  with an estimate from their measured neighbours (``evos_nerf.core.neighbourhood``: the mean
  error of their 16 x 16 block, shrunk toward their image's mean), or with the plain mean observed
  error (``unvisited_prior="mean"``), plus a tiny random tie-break. They are neither starved nor
  allowed to crowd the pool with random picks.

A store may hold a *shard*: a subset of the cameras (``cameras`` lists their absolute indices).
Indexing by (camera, y, x) always uses absolute camera indices; flat indices are local to the
shard. Distributed runs pass ``reduce_sum`` to :meth:`rank` so that the crossover balance and the
never-visited prior are agreed over all shards (see ``evos_nerf.core.sharding``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.core.neighbourhood import neighbourhood_estimate
from evos_nerf.core.selection import CrossoverMethod, crossover, membership, mutate, top_k

Ranking = Literal["evos", "topk", "staleness", "edges"]
"""evos: crossover of (stale-corrected) error and edge-weighted error; topk: raw error only (hard
mining); staleness: time since last trained (coverage control); edges: ground-truth Laplacian only
(edge-prior control)."""

UnvisitedPrior = Literal["neighbourhood", "mean"]
"""How never-visited pixels are ranked: from their measured neighbours, or at the global mean."""

ReduceSum = Callable[[Tensor], Tensor]
"""Sums a small float64 tensor over all shards (identity on one process)."""

VISITS_MAX = torch.iinfo(torch.int16).max


def _identity(t: Tensor) -> Tensor:
    return t


class FitnessStore(nn.Module):
    def __init__(
        self,
        sizes: Sequence[Tuple[int, int]],
        dtype: torch.dtype = torch.float16,
        cameras: Optional[Sequence[int]] = None,
        num_cameras: Optional[int] = None,
    ) -> None:
        """``sizes`` are (H, W) of the images this store holds; ``cameras`` their absolute indices
        (default: all cameras 0..N-1); ``num_cameras`` the total number of training cameras."""
        super().__init__()
        if not sizes:
            raise ValueError("a fitness store needs at least one training image")
        cameras = list(range(len(sizes))) if cameras is None else [int(c) for c in cameras]
        if len(cameras) != len(sizes):
            raise ValueError(f"{len(cameras)} camera indices for {len(sizes)} image sizes")
        self.num_cameras = int(num_cameras if num_cameras is not None else max(cameras) + 1)
        local_of = torch.full((self.num_cameras,), -1, dtype=torch.long)
        local_of[torch.tensor(cameras, dtype=torch.long)] = torch.arange(len(cameras))
        self.register_buffer("cameras", torch.tensor(cameras, dtype=torch.long))
        """Absolute camera index of each image in this store (a shard holds a subset)."""
        self.register_buffer("local_of", local_of, persistent=False)
        heights = torch.tensor([h for h, _ in sizes], dtype=torch.long)
        widths = torch.tensor([w for _, w in sizes], dtype=torch.long)
        offsets = pixel_offsets(heights * widths)
        self.num_pixels = int(offsets[-1])
        self.register_buffer("heights", heights)
        self.register_buffer("widths", widths)
        self.register_buffer("offsets", offsets)
        self.register_buffer("fitness", torch.zeros(self.num_pixels, dtype=dtype))
        """Last measured per-pixel error (mean squared RGB error of its ray)."""
        self.register_buffer("last_step", torch.full((self.num_pixels,), -1, dtype=torch.int32))
        """Step at which the error was measured; -1 = never visited."""
        self.register_buffer("edges", torch.ones(self.num_pixels, dtype=dtype))
        """Ground truth's squared Laplacian, normalised to mean 1 over valid pixels."""
        self.register_buffer("valid", torch.ones(self.num_pixels, dtype=torch.bool))
        """False for masked-out pixels: never selected."""
        self.register_buffer("visits", torch.zeros(self.num_pixels, dtype=torch.int16))
        """How often each pixel was trained (saturates at 32767): the selection-count map."""
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.pool: Optional[Tensor] = None
        """Candidate pool from the last key iteration (flat indices, fittest first)."""
        self.excluded: Optional[Tensor] = None
        """pool | ~valid: what mutation must not draw."""
        self.num_excluded = 0
        self.error_curve: List[Tuple[int, float]] = []
        """(step, mean batch error) history, for staleness correction."""
        self.last_balance = float("nan")

    # -- indexing ----------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        """Images held by this store (all of them, or this rank's shard)."""
        return int(self.heights.numel())

    def owns(self, camera: int) -> bool:
        return 0 <= camera < self.num_cameras and int(self.local_of[camera]) >= 0

    def _local(self, camera: Tensor) -> Tensor:
        local = self.local_of[camera.to(self.local_of.device).long()]
        if bool((local < 0).any()):
            raise IndexError("pixels of cameras outside this fitness-store shard")
        return local

    def flat_index(self, camera: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """Absolute (camera, y, x) -> flat index into this store."""
        local = self._local(camera)
        return self.offsets[local] + y.to(local.device).long() * self.widths[local] + x.to(local.device).long()

    def unflatten(self, flat: Tensor) -> Tensor:
        """Flat indices -> [R, 3] long (absolute camera, y, x)."""
        flat = flat.to(self.offsets.device).long()
        local = torch.searchsorted(self.offsets, flat, right=True) - 1
        rem = flat - self.offsets[local]
        width = self.widths[local]
        return torch.stack([self.cameras[local], rem // width, rem % width], dim=-1)

    def image_view(self, values: Tensor, camera: int) -> Tensor:
        """[H, W] view of a per-pixel tensor for one (absolute) camera (heatmaps)."""
        local = int(self._local(torch.tensor([camera]))[0])
        start, end = int(self.offsets[local]), int(self.offsets[local + 1])
        return values[start:end].reshape(int(self.heights[local]), int(self.widths[local]))

    # -- initialisation from the training images ----------------------------------------------
    def initialise(
        self,
        images: Sequence[Tensor],
        masks: Optional[Sequence[Optional[Tensor]]] = None,
        names: Optional[Sequence[str]] = None,
        reduce_sum: ReduceSum = _identity,
    ) -> None:
        """Edge prior and valid mask from the training images ([H, W, 3] in [0, 1], in the order of
        ``self.cameras``).

        ``names`` (e.g. file names) make size-mismatch errors point at the offending image.
        ``reduce_sum`` normalises the edge prior over all shards, so every rank uses one scale.
        """
        if len(images) != self.num_images:
            raise ValueError(f"expected {self.num_images} training images, got {len(images)}")
        for local, image in enumerate(images):
            cam = int(self.cameras[local])
            h, w = int(self.heights[local]), int(self.widths[local])
            if tuple(image.shape[:2]) != (h, w):
                name = names[local] if names is not None else f"training image {cam}"
                raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]} but its camera is {w}x{h}")
            lap = laplacian_of_rgb(image[..., :3].float().cpu()) / 255.0  # [0, 1] units: fits in fp16
            self.image_view(self.edges, cam).copy_((lap**2).to(self.edges.device, self.edges.dtype))
            mask = masks[local] if masks is not None else None
            if mask is not None:
                self.image_view(self.valid, cam).copy_(mask.reshape(h, w).bool().to(self.valid.device))
        edges = self.edges.float()[self.valid]
        totals = reduce_sum(torch.tensor([float(edges.sum()), float(edges.numel())], dtype=torch.float64))
        if float(totals[1]) == 0:
            raise ValueError("every training pixel is masked out; nothing to train on")
        mean_edges = float(totals[0] / totals[1])
        self.edges.copy_((self.edges.float() / max(mean_edges, 1e-12)).to(self.edges.dtype))
        self.initialised.fill_(True)

    # -- feedback ------------------------------------------------------------------------------
    def update(self, flat: Tensor, error: Tensor, step: int, trained: bool = True) -> int:
        """Write measured errors back; non-finite errors are skipped. Returns how many were skipped.

        ``trained`` counts the pixels as trained (visits); re-measurements at key iterations are not.
        """
        flat = flat.to(self.fitness.device).long()
        if trained:
            self.visits.index_put_((flat,), torch.ones_like(flat, dtype=self.visits.dtype), accumulate=True)
            touched = self.visits[flat]  # int16 wraps negative past 32767: saturate instead
            self.visits[flat] = torch.where(touched < 0, torch.full_like(touched, VISITS_MAX), touched)
        error = error.detach().reshape(-1).to(self.fitness.device).float()
        finite = torch.isfinite(error)
        skipped = int((~finite).sum())
        if skipped:
            flat, error = flat[finite], error[finite]
        self.fitness[flat] = error.to(self.fitness.dtype)
        self.last_step[flat] = step
        if error.numel():
            self.error_curve.append((int(step), float(error.mean())))
        return skipped

    # -- key iterations --------------------------------------------------------------------------
    def _error_level(self, steps: Tensor) -> Tensor:
        """Smoothed mean training error at the given steps (the error curve, interpolated)."""
        if not self.error_curve:
            return torch.ones_like(steps, dtype=torch.float32)
        curve = torch.tensor(self.error_curve, dtype=torch.float32, device=steps.device)
        # Smooth with a running mean over ~20 records so one noisy batch does not rescale everyone.
        window = min(20, curve.shape[0])
        kernel = torch.ones(1, 1, window, device=steps.device) / window
        padded = torch.cat([curve[:1, 1].repeat(window - 1), curve[:, 1]])
        level = torch.nn.functional.conv1d(padded.view(1, 1, -1), kernel).view(-1).clamp_min(1e-12)
        pos = torch.searchsorted(curve[:, 0].contiguous(), steps.float().contiguous(), right=True) - 1
        return level[pos.clamp(0, level.numel() - 1)]

    def corrected_fitness(
        self,
        stale_correction: bool,
        generator: torch.Generator,
        reduce_sum: ReduceSum = _identity,
        unvisited_prior: UnvisitedPrior = "neighbourhood",
        prior_block: int = 16,
    ) -> Tensor:
        """Fitness as of now: stale errors rescaled by the error curve, never-visited pixels estimated."""
        e = self.fitness.float()
        visited = self.last_step >= 0
        if stale_correction and bool(visited.any()):
            now = torch.tensor([self.error_curve[-1][0]], device=e.device) if self.error_curve else None
            if now is not None:
                ratio = self._error_level(now) / self._error_level(self.last_step.clamp_min(0))
                e = torch.where(visited, e * ratio.clamp(max=1.0), e)
        measured = visited & self.valid
        seen = e[measured]
        totals = reduce_sum(torch.tensor([float(seen.sum()), float(seen.numel())], dtype=torch.float64))
        prior = float(totals[0] / totals[1]) if float(totals[1]) > 0 else 1.0
        estimate: float | Tensor = prior
        if unvisited_prior == "neighbourhood":
            estimate = neighbourhood_estimate(e, measured, self.offsets, self.heights, self.widths, prior, prior_block)
        jitter = torch.rand(e.shape, generator=generator, device=generator.device).to(e.device)
        e = torch.where(visited, e, estimate * (1.0 + 1e-3 * jitter))
        return e

    def rank(
        self,
        pool_size: int,
        ranking: Ranking = "evos",
        crossover_method: CrossoverMethod = "select",
        stale_correction: bool = True,
        step: int = 0,
        generator: Optional[torch.Generator] = None,
        reduce_sum: ReduceSum = _identity,
        unvisited_prior: UnvisitedPrior = "neighbourhood",
        prior_block: int = 16,
    ) -> Tensor:
        """Build the candidate pool of ``pool_size`` pixels; masked-out pixels never enter it."""
        generator = generator or torch.Generator(device="cpu")
        neg_inf = torch.tensor(float("-inf"), device=self.fitness.device)
        if ranking == "staleness":
            never = self.last_step < 0
            score = torch.where(never, float(step + 1), step - self.last_step.float())
            pool = top_k(torch.where(self.valid, score, neg_inf), pool_size)
        elif ranking == "edges":
            pool = top_k(torch.where(self.valid, self.edges.float(), neg_inf), pool_size)
        elif ranking == "topk":
            e = self.corrected_fitness(False, generator, reduce_sum, unvisited_prior, prior_block)
            pool = top_k(torch.where(self.valid, e, neg_inf), pool_size)
        else:
            e = self.corrected_fitness(stale_correction, generator, reduce_sum, unvisited_prior, prior_block)
            hf = e * self.edges.float()
            # EVOS Eq. 5 over valid pixels only (of every shard: p is the same on all ranks).
            p = None
            if crossover_method == "select":
                sums = reduce_sum(torch.tensor([float(e[self.valid].sum()), float(hf[self.valid].sum())], dtype=torch.float64))
                p = float(sums[0]) / max(float(sums[0] + sums[1]), 1e-30)
            offspring = crossover(
                torch.where(self.valid, e, neg_inf), torch.where(self.valid, hf, neg_inf), pool_size,
                crossover_method, balance=p,
            )
            pool = offspring.indices
            self.last_balance = offspring.balance
        self.set_pool(pool)
        return pool

    def set_pool(self, pool: Tensor) -> None:
        self.pool = pool.to(self.fitness.device)
        self.excluded = membership(self.pool, self.num_pixels) | ~self.valid
        self.num_excluded = int(self.excluded.sum())

    def stalest_in_pool(self, step: int, budget: int) -> Tensor:
        """Up to ``budget`` pool members with the oldest measurements (to re-measure before ranking)."""
        if self.pool is None or budget <= 0 or self.pool.numel() == 0:
            return torch.empty(0, dtype=torch.long, device=self.fitness.device)
        age = (step - self.last_step[self.pool]).float()
        return self.pool[top_k(age, budget)]

    # -- per-step selection ----------------------------------------------------------------------
    def sample_uniform(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Uniform over valid pixels (no ranking yet, the uniform baseline, or evolution paused)."""
        idx = mutate(self.num_pixels, batch_size, ~self.valid, generator, self.fitness.device)
        return _fill(idx, batch_size, generator)

    def sample(
        self, batch_size: int, mutation_share: float, generator: torch.Generator, num_mutants: Optional[int] = None
    ) -> Tuple[Tensor, int]:
        """(flat indices of one batch, number of mutants). O(batch): never touches all pixels.

        ``num_mutants`` overrides ``round(batch_size * mutation_share)`` (sharded runs size each
        rank's mutant share by its number of unselected pixels, see ``sharding.mutant_count``).
        """
        if self.pool is None or self.pool.numel() == 0:
            return self.sample_uniform(batch_size, generator), batch_size
        if num_mutants is None:
            num_mutants = int(round(batch_size * mutation_share))
        num_mutants = min(max(num_mutants, 0), batch_size)
        num_selected = min(batch_size - num_mutants, self.pool.numel())
        num_mutants = batch_size - num_selected
        pos = mutate(self.pool.numel(), num_selected, None, generator, self.pool.device)
        selected = self.pool[pos]
        mutants = mutate(
            self.num_pixels, num_mutants, self.excluded, generator, self.fitness.device, self.num_excluded
        )
        idx = torch.cat([selected, mutants])
        return _fill(idx, batch_size, generator), mutants.numel()

    # -- state ---------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        return {
            "pool": None if self.pool is None else self.pool.cpu(),
            "error_curve": list(self.error_curve),
            "last_balance": self.last_balance,
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.error_curve = [tuple(x) for x in state.get("error_curve", [])]
        self.last_balance = float(state.get("last_balance", float("nan")))
        pool = state.get("pool")
        if pool is not None:
            self.set_pool(pool.to(self.fitness.device))
        else:
            self.pool, self.excluded, self.num_excluded = None, None, 0

    def _apply(self, fn, recurse=True):
        # Keep the non-buffer pool and exclusion mask on the same device as the buffers.
        out = super()._apply(fn, recurse)
        if self.pool is not None:
            self.set_pool(self.pool.to(self.fitness.device))
        return out

    def memory_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    @property
    def num_unselected(self) -> int:
        """Valid pixels outside the pool: what mutation draws from."""
        return self.num_pixels - self.num_excluded if self.excluded is not None else int(self.valid.sum())

    # -- global (unsharded) layout -----------------------------------------------------------
    def to_global_flat(self, flat: Tensor, global_offsets: Tensor, global_widths: Tensor) -> Tensor:
        cyx = self.unflatten(flat)
        return global_offsets[cyx[:, 0]] + cyx[:, 1] * global_widths[cyx[:, 0]] + cyx[:, 2]

    def from_global_flat(self, flat: Tensor, global_offsets: Tensor, global_widths: Tensor) -> Tensor:
        """Global flat indices -> this store's flat indices, dropping pixels of cameras it does not hold."""
        flat = flat.long().cpu()
        camera = torch.searchsorted(global_offsets.cpu(), flat, right=True) - 1
        keep = self.local_of.cpu()[camera] >= 0
        flat, camera = flat[keep], camera[keep]
        rem = flat - global_offsets.cpu()[camera]
        width = global_widths.cpu()[camera]
        return self.flat_index(camera, rem // width, rem % width)


def pixel_offsets(counts: Tensor) -> Tensor:
    """Flat index of each image's first pixel, plus the total: [N + 1] long (images laid end to end)."""
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts.long(), 0)
    return offsets


def _fill(idx: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Pad by repetition when fewer distinct pixels exist than the batch asks for (tiny scenes)."""
    if idx.numel() >= batch_size or idx.numel() == 0:
        return idx[:batch_size]
    extra = torch.randint(0, idx.numel(), (batch_size - idx.numel(),), generator=generator, device=generator.device)
    return torch.cat([idx, idx[extra.to(idx.device)]])


def key_pool_size(num_valid: int, selection_ratio: float) -> int:
    return max(1, int(math.floor(selection_ratio * num_valid)))
