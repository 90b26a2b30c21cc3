"""Per-pixel fitness across many training images: EVOS adapted to rays (NeRF).

One value per training pixel, keyed by absolute (camera, y, x) through a flat index with per-image
offsets, so images of different resolutions share one store. It is an ``nn.Module`` only so that
its tensors travel with ``.to(device)`` and land in checkpoints as buffers; it has no parameters.

The store only records: measured errors, when they were measured, the valid mask, the edge
prior and visit counts, plus ``corrected_fitness``, the estimate of every pixel's error *now*
(stale errors rescaled by the fall of the mean training error, never-visited pixels estimated from
their measured neighbours). What to train on is decided by ``evos_nerf.core.selector``.

A store may hold a *shard*: a subset of the cameras (``cameras`` lists their absolute indices).
Indexing by (camera, y, x) always uses absolute camera indices; flat indices are local to the
shard. Distributed runs pass ``reduce_sum`` to :meth:`corrected_fitness` so that the
never-visited prior is agreed over all shards (see ``evos_nerf.core.sharding``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.core.neighbourhood import neighbourhood_estimate
from evos_nerf.core.selection import mutate

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
        self.error_curve: List[Tuple[int, float]] = []
        """(step, mean batch error) history, for staleness correction."""

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

    def locate(self, flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Flat indices -> (local image, y, x), each [R] long."""
        flat = flat.to(self.offsets.device).long()
        local = torch.searchsorted(self.offsets, flat, right=True) - 1
        rem = flat - self.offsets[local]
        width = self.widths[local]
        return local, rem // width, rem % width

    def unflatten(self, flat: Tensor) -> Tensor:
        """Flat indices -> [R, 3] long (absolute camera, y, x)."""
        local, y, x = self.locate(flat)
        return torch.stack([self.cameras[local], y, x], dim=-1)

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

    # -- per-step selection ----------------------------------------------------------------------
    def sample_uniform(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Uniform over valid pixels: the uniform baseline, a paused selector, or before any ranking."""
        idx = mutate(self.num_pixels, batch_size, ~self.valid, generator, self.fitness.device)
        return fill(idx, batch_size, generator)

    # -- state ---------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        return {"error_curve": list(self.error_curve)}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.error_curve = [tuple(x) for x in state.get("error_curve", [])]

    def memory_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

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


def fill(idx: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Pad by repetition when fewer distinct pixels exist than the batch asks for (tiny scenes)."""
    if idx.numel() >= batch_size or idx.numel() == 0:
        return idx[:batch_size]
    extra = torch.randint(0, idx.numel(), (batch_size - idx.numel(),), generator=generator, device=generator.device)
    return torch.cat([idx, idx[extra.to(idx.device)]])

