"""Per-pixel fitness across many training images: EVOS adapted to rays (NeRF), at 4 bytes per pixel.

One value per training pixel, keyed by absolute (camera, y, x) through a flat index with per-image
offsets, so images of different resolutions share one store. It is an ``nn.Module`` only so that
its tensors travel with ``.to(device)``; its buffers are not persistent (checkpoints go through
``evos_nerf.core.selector.RaySelector.sharded_state``, one key per camera).

What is kept per pixel, and why it is enough:

* ``fitness`` (fp16, 2 bytes): the last measured error. NaN marks a masked-out pixel, so the valid
  mask costs nothing (``valid`` computes it on demand; errors are clamped to the finite fp16 range,
  so a measured pixel is never NaN).
* ``epoch`` (int16, 2 bytes): the key-iteration index ("epoch") in which the error was measured;
  0 = never. The selector starts a new epoch at every key iteration; the counter saturates at
  32767 (1.6 M steps at a key interval of 50). Stale correction needs only the error level of each
  epoch, which the store records (mean training error per epoch, agreed over all shards).
* ``visits`` (uint8, +1 byte, only with ``track_visits``): how often each pixel was trained,
  saturating at 255: the selection-count maps of the viewer and the image logs.

The edge prior is not stored: it is the ground truth's squared Laplacian, derived per image from
the training images whenever a ranking needs it (``edges``), normalised by one scalar agreed over
all shards at ``initialise``.

The store only records; ``ranking_scores`` estimates every pixel's error *now* (stale errors
rescaled by the fall of the error level, never-visited pixels estimated from their measured
neighbours). What to train on is decided by ``evos_nerf.core.selector``.

A store may hold a *shard*: a subset of the cameras (``cameras`` lists their absolute indices).
Indexing by (camera, y, x) always uses absolute camera indices; flat indices are local to the
shard. Distributed runs pass ``reduce_sum`` so that the normalisers are agreed over all shards.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, List, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from evos_nerf.core.bits import bits_at, pack_bits
from evos_nerf.core.contrast import ssim_sensitivity
from evos_nerf.core.laplacian import laplacian_squared
from evos_nerf.core.learnable import fit_floors, learnable_error
from evos_nerf.core.neighbourhood import Blocks, fill_unmeasured, shrink_toward
from evos_nerf.core.selection import mutate

if TYPE_CHECKING:  # crossview builds on this module (pixel_offsets)
    from evos_nerf.core.crossview import ViewBlocks

Fitness = Literal["error", "learnable", "relative"]
"""What a pixel's fitness is: its (stale-corrected) error; only the part of it that training is
still taking away (``evos_nerf.core.learnable``); or its error relative to its own image's mean
error, so that a view's overall error level (blur, exposure, pose error: persistent on real
captures) does not decide how much of the pool the view gets."""

CrossoverPrior = Literal["edges", "smooth"]
"""The second crossover parent's per-pixel weight on the error: edges, the ground truth's squared
Laplacian (the paper's high-frequency parent, PSNR on edges); smooth, SSIM's sensitivity
1 / (2 s^2 + C2) (``evos_nerf.core.contrast``: error in flat regions, where SSIM loses most)."""

UnvisitedPrior = Literal["neighbourhood", "mean", "crossview", "crossview-pooled"]
"""How never-visited pixels are ranked: from their measured neighbours, at the global mean, or from
their measured neighbours and the other views' errors projected onto their block
(``evos_nerf.core.crossview``; without that evidence it is the neighbourhood prior): as a level
between the block and its image (crossview) or as more measurements of the block (crossview-pooled)."""

CROSSVIEW_PRIORS = ("crossview", "crossview-pooled")

ReduceSum = Callable[[Tensor], Tensor]
"""Sums a small float64 tensor over all shards (identity on one process)."""

ImageSource = Union[Sequence[Tensor], Callable[[int], Tensor]]
"""The training images of a store, in the order of its cameras: a sequence, or local index -> image."""

EPOCH_MAX = torch.iinfo(torch.int16).max
VISITS_MAX = 255
_CHUNK = 1 << 20
"""Pixels per slice of whole-store passes: isnan on fp16 goes through fp32 on CPUs (4 bytes a pixel)."""
_TALLIES = ("num_measured", "measured_total", "epoch_sum", "epoch_count", "num_skipped")


class _Tally:
    """A running sum kept in the store's ``tallies`` buffer (on its device), read as a Python number."""

    def __init__(self, cast: type) -> None:
        self.cast = cast

    def __set_name__(self, owner: type, name: str) -> None:
        self.index = _TALLIES.index(name)

    def __get__(self, store: Optional["FitnessStore"], owner: Optional[type] = None):
        return self if store is None else self.cast(store.tallies[self.index])

    def __set__(self, store: "FitnessStore", value: float) -> None:
        store.tallies[self.index] = float(value)


def _identity(t: Tensor) -> Tensor:
    return t


class FitnessStore(nn.Module):
    num_measured = _Tally(int)
    """Pixels with a measured error."""
    measured_total = _Tally(float)
    """Sum of the stored errors of measured pixels, kept up to date by ``update`` (statistics)."""
    epoch_sum = _Tally(float)
    epoch_count = _Tally(int)
    """This shard's training errors of the current epoch so far (closed by ``close_epoch``)."""
    num_skipped = _Tally(int)
    """Non-finite errors ``update`` has left out, over the store's life."""

    def __init__(
        self,
        sizes: Sequence[Tuple[int, int]],
        dtype: torch.dtype = torch.float16,
        cameras: Optional[Sequence[int]] = None,
        num_cameras: Optional[int] = None,
        track_visits: bool = False,
        track_uniform: bool = False,
    ) -> None:
        """``sizes`` are (H, W) of the images this store holds; ``cameras`` their absolute indices
        (default: all cameras 0..N-1); ``num_cameras`` the total number of training cameras;
        ``track_visits`` keeps per-pixel selection counts (+1 byte per pixel) for inspection;
        ``track_uniform`` keeps per-image, per-epoch sums of uniformly drawn errors (learnable fitness)."""
        super().__init__()
        if not sizes:
            raise ValueError("a fitness store needs at least one training image")
        cameras = list(range(len(sizes))) if cameras is None else [int(c) for c in cameras]
        if len(cameras) != len(sizes):
            raise ValueError(f"{len(cameras)} camera indices for {len(sizes)} image sizes")
        self.num_cameras = int(num_cameras if num_cameras is not None else max(cameras) + 1)
        local_of = torch.full((self.num_cameras,), -1, dtype=torch.long)
        local_of[torch.tensor(cameras, dtype=torch.long)] = torch.arange(len(cameras))
        self.register_buffer("cameras", torch.tensor(cameras, dtype=torch.long), persistent=False)
        """Absolute camera index of each image in this store (a shard holds a subset)."""
        self.register_buffer("local_of", local_of, persistent=False)
        heights = torch.tensor([h for h, _ in sizes], dtype=torch.long)
        widths = torch.tensor([w for _, w in sizes], dtype=torch.long)
        offsets = pixel_offsets(heights * widths)
        self.num_pixels = int(offsets[-1])
        self.register_buffer("heights", heights, persistent=False)
        self.register_buffer("widths", widths, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self._host_geometry = (offsets, widths, self.cameras)
        """Host copies of the geometry: flat indices drawn on the host are located there, with no
        copy to the store's device and back."""
        self._host_invalid: Optional[Tensor] = None
        """Packed host bits of the masked pixels, made on first use by a host draw on a GPU store."""
        same = len({(int(h), int(w)) for h, w in sizes}) == 1
        self.image_size: Optional[int] = int(heights[0] * widths[0]) if same else None
        self.image_width: Optional[int] = int(widths[0]) if same else None
        """Pixels and width of every image when all have one size (``locate`` then divides)."""
        self.register_buffer("fitness", torch.zeros(self.num_pixels, dtype=dtype), persistent=False)
        """Last measured per-pixel error (mean squared RGB error of its ray); NaN = masked out."""
        self.register_buffer("epoch", torch.zeros(self.num_pixels, dtype=torch.int16), persistent=False)
        """Epoch (key-iteration index) in which the error was measured; 0 = never."""
        visits = torch.zeros(self.num_pixels, dtype=torch.uint8) if track_visits else None
        self.register_buffer("visits", visits, persistent=False)
        """How often each pixel was trained (saturates at 255), or None when not tracked."""
        uniform = torch.zeros(len(sizes), 2, 16, dtype=torch.float64) if track_uniform else None
        self.register_buffer("uniform", uniform, persistent=False)
        """[N, 2, E] count and error total of each image's uniformly drawn measurements in each
        epoch (the unbiased sample the learnable-error fitness fits on), or None when not tracked.
        Sums, not per-pixel flags, so that a pixel's later, biased measurements never erase them."""
        self.current_epoch = 1
        """Epoch stamped on new measurements; the selector advances it at every key iteration."""
        self.error_levels: List[float] = [math.nan]
        """Mean training error of each closed epoch over all shards (index = epoch; NaN = none)."""
        self.register_buffer("tallies", torch.zeros(len(_TALLIES), dtype=torch.float64), persistent=False)
        """Running sums ``update`` adds to on the store's device (``_TALLIES``), read only when asked
        for, so that a write-back never waits on the GPU. Whole numbers stay exact up to 2^53."""
        self.edge_scale = 1.0
        """1 / mean squared Laplacian over all valid pixels of all shards (edge prior has mean 1)."""
        self.smooth_scale: Optional[float] = None
        """1 / mean SSIM sensitivity over all valid pixels of all shards (None: the smooth prior is unused)."""
        self.images: Optional[Callable[[int], Tensor]] = None
        """Local image index -> its training image [H, W, 3] (the source of the edge prior)."""
        self.num_valid = self.num_pixels

    def _apply(self, fn, recurse=True):
        self._host_invalid = None  # rebuilt from the moved fitness on first use
        return super()._apply(fn, recurse)

    # -- indexing ----------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        """Images held by this store (all of them, or this rank's shard)."""
        return int(self.heights.numel())

    @property
    def track_visits(self) -> bool:
        return self.visits is not None

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

    @property
    def on_host(self) -> bool:
        """Whether the per-pixel buffers are in host memory (host draws then read them directly)."""
        return self.fitness.device.type == "cpu"

    def _geometry(self, flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(offsets, widths, cameras) where ``flat`` is: host draws are located on the host."""
        return self._host_geometry if flat.device.type == "cpu" else (self.offsets, self.widths, self.cameras)

    def _local_of_flat(self, flat: Tensor) -> Tensor:
        """Flat indices -> [R] long local image (what ``locate`` and ``camera_of`` share), on ``flat``'s device."""
        flat = flat.long()
        if self.image_size is not None:  # one size for all: a division (searchsorted is slow on CPU)
            return flat // self.image_size
        return torch.searchsorted(self._geometry(flat)[0], flat, right=True) - 1

    def locate(self, flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Flat indices -> (local image, y, x), each [R] long, on ``flat``'s device."""
        flat = flat.long()
        local = self._local_of_flat(flat)
        if self.image_size is not None:
            rem = flat - local * self.image_size
            return local, rem // self.image_width, rem % self.image_width
        offsets, widths, _ = self._geometry(flat)
        rem = flat - offsets.index_select(0, local)
        width = widths.index_select(0, local)
        return local, rem // width, rem % width

    def camera_of(self, flat: Tensor) -> Tensor:
        """Flat indices -> [R] long absolute camera (without the pixel position ``unflatten`` adds)."""
        return self._geometry(flat)[2].index_select(0, self._local_of_flat(flat))

    def unflatten(self, flat: Tensor) -> Tensor:
        """Flat indices -> [R, 3] long (absolute camera, y, x)."""
        local, y, x = self.locate(flat)
        return torch.stack([self.cameras.index_select(0, local), y, x], dim=-1)

    def image_range(self, local: int) -> Tuple[int, int]:
        """Flat index range [start, end) of one local image."""
        return int(self.offsets[local]), int(self.offsets[local + 1])

    def image_view(self, values: Tensor, camera: int) -> Tensor:
        """[H, W] view of a per-pixel tensor for one (absolute) camera (heatmaps)."""
        local = int(self._local(torch.tensor([camera]))[0])
        start, end = self.image_range(local)
        return values[start:end].reshape(int(self.heights[local]), int(self.widths[local]))

    def fitness_map(self, camera: int) -> Tensor:
        """[H, W] cached error of one training camera on the CPU (0 where never measured or masked)."""
        fitness = self.image_view(self.fitness, camera).float()
        measured = self.image_view(self.epoch, camera) > 0
        return torch.where(measured & torch.isfinite(fitness), fitness, torch.zeros_like(fitness)).cpu()

    def selection_count_map(self, camera: int) -> Tensor:
        """[H, W] how often each pixel of one training camera was trained (saturates at 255)."""
        if self.visits is None:
            raise RuntimeError("selection counts are off (--pipeline.inspection.selection-counts)")
        return self.image_view(self.visits, camera).float().cpu()

    # -- validity --------------------------------------------------------------------------------
    @property
    def valid(self) -> Tensor:
        """[P] bool, False for masked-out pixels (never selected). O(P): computed on demand."""
        out = torch.empty(self.num_pixels, dtype=torch.bool, device=self.fitness.device)
        for start in range(0, self.num_pixels, _CHUNK):
            out[start : start + _CHUNK] = torch.isnan(self.fitness[start : start + _CHUNK])
        return out.logical_not_()

    def invalid_at(self, flat: Tensor) -> Tensor:
        """Whether each given pixel is masked out: O(R)."""
        if flat.device.type == "cpu" and not self.on_host:  # a host draw on a GPU store
            return bits_at(self._host_invalid_bits(), flat)
        return torch.isnan(self.fitness.index_select(0, flat.to(self.fitness.device).long()))

    def _host_invalid_bits(self) -> Tensor:
        if self._host_invalid is None:  # one O(P / 8) copy, then every host draw tests masks on the host
            chunks = [pack_bits(torch.isnan(self.fitness[s : s + _CHUNK])).cpu() for s in range(0, self.num_pixels, _CHUNK)]
            self._host_invalid = torch.cat(chunks)
        return self._host_invalid

    def refresh_counts(self) -> None:
        """Recount valid and measured pixels and their total (after fitness or epochs were loaded wholesale)."""
        self._host_invalid = None
        chunks = [self.fitness[s : s + _CHUNK] for s in range(0, self.num_pixels, _CHUNK)]
        self.num_valid = self.num_pixels - sum(int(torch.isnan(c).sum()) for c in chunks)
        self.num_measured = int(torch.count_nonzero(self.epoch))
        self.measured_total = sum(float(torch.nansum(c, dtype=torch.float64)) for c in chunks)  # unmeasured hold 0

    # -- initialisation from the training images ----------------------------------------------
    def initialise(
        self,
        images: ImageSource,
        masks: Optional[Sequence[Optional[Tensor]]] = None,
        names: Optional[Sequence[str]] = None,
        reduce_sum: ReduceSum = _identity,
        smooth_prior: bool = False,
    ) -> None:
        """Keep the image source, mark masked pixels (NaN), and agree the edge prior's scale (and
        the smooth prior's, when ``smooth_prior``: one more pass over the images).

        ``images`` are [H, W, 3] in [0, 1] (or uint8), in the order of ``self.cameras``: a sequence
        (kept by reference, never copied) or a function of the local index. ``names`` (e.g. file
        names) make size-mismatch errors point at the offending image. ``reduce_sum`` normalises the
        edge prior over all shards, so every rank uses one scale.
        """
        get = images if callable(images) else images.__getitem__
        if not callable(images) and len(images) != self.num_images:
            raise ValueError(f"expected {self.num_images} training images, got {len(images)}")
        total, count, smooth_total = 0.0, 0, 0.0
        for local in range(self.num_images):
            cam = int(self.cameras[local])
            h, w = int(self.heights[local]), int(self.widths[local])
            image = get(local)
            if tuple(image.shape[:2]) != (h, w):
                name = names[local] if names is not None else f"training image {cam}"
                raise ValueError(f"{name} is {image.shape[1]}x{image.shape[0]} but its camera is {w}x{h}")
            mask = masks[local] if masks is not None else None
            start, end = self.image_range(local)
            part = self.fitness[start:end]
            if mask is not None:
                keep = mask.reshape(-1).bool().to(part.device)
                part.masked_fill_(~keep, math.nan)
            lap2 = laplacian_squared(image.to(part.device)).reshape(-1)
            valid = ~torch.isnan(part)
            total += float(lap2[valid].sum(dtype=torch.float64))
            count += int(valid.sum())
            if smooth_prior:
                smooth_total += float(ssim_sensitivity(image.to(part.device)).reshape(-1)[valid].sum(dtype=torch.float64))
        self.images = get
        totals = reduce_sum(torch.tensor([total, float(count), smooth_total], dtype=torch.float64))
        if float(totals[1]) == 0:
            raise ValueError("every training pixel is masked out; nothing to train on")
        self.edge_scale = 1.0 / max(float(totals[0] / totals[1]), 1e-12)
        self.smooth_scale = float(totals[1] / totals[2]) if smooth_prior else None
        self.refresh_counts()

    def edges(self, local: int) -> Tensor:
        """[H*W] float32 edge prior of one local image: its squared Laplacian, mean 1 over all valid pixels."""
        if self.images is None:
            raise RuntimeError("the fitness store was not initialised with its training images")
        lap2 = laplacian_squared(self.images(local).to(self.fitness.device)).reshape(-1)
        return lap2.mul_(self.edge_scale)

    def smooth(self, local: int) -> Tensor:
        """[H*W] float32 smooth prior of one local image: its SSIM sensitivity, mean 1 over all valid pixels."""
        if self.images is None or self.smooth_scale is None:
            raise RuntimeError("the fitness store was not initialised with smooth_prior=True")
        image = self.images(local).to(self.fitness.device)
        return ssim_sensitivity(image).reshape(-1).mul_(self.smooth_scale)

    def crossover_prior(self, local: int, kind: CrossoverPrior) -> Tensor:
        """The second crossover parent's weight map of one local image (mean 1 over valid pixels)."""
        if kind == "edges":
            return self.edges(local)
        if kind == "smooth":
            return self.smooth(local)
        raise ValueError(f"unknown crossover prior {kind!r}")

    def all_edges(self) -> Tensor:
        """[P] float32 edge prior of every pixel (O(P) memory: inspection and tests)."""
        return torch.cat([self.edges(i) for i in range(self.num_images)])

    # -- feedback ------------------------------------------------------------------------------
    def update(self, flat: Tensor, error: Tensor, trained: bool = True, uniform: Optional[Tensor] = None) -> Tensor:
        """Write measured errors back, stamped with the current epoch. Returns how many were skipped.

        Non-finite errors are skipped, and masked pixels stay masked. ``trained`` counts the rays
        toward the epoch's error level and the visit counts; re-measurements at key iterations are
        not trained. ``uniform`` [R] bool marks rays drawn uniformly (None: none of them were).

        Which pixel each ray writes is worked out where the rays were drawn (the host) and goes to
        the store's device in one copy; the count skipped (a 0-dim tensor) and the running sums
        stay on the device. So on a GPU a write-back waits for nothing (each host read would wait
        for the step's queued forward pass, and hold back the launch of its backward pass).
        """
        device = self.fitness.device
        # Host errors to a GPU store without a wait (safe: the copy is staged before this returns).
        error = error.detach().reshape(-1).to(device, non_blocking=device.type != "cpu").float()
        host = flat.long().cpu()  # host draws stay put; device indices (re-measurements) are read once
        if host.numel() != error.numel():
            raise ValueError(f"{error.numel()} errors for {host.numel()} rays")
        if uniform is not None:
            uniform = uniform.reshape(-1).bool().cpu()
            if uniform.numel() != host.numel():
                raise ValueError(f"{uniform.numel()} uniform-draw flags for {host.numel()} rays")
        track_uniform = self.uniform is not None and uniform is not None and bool(uniform.any())
        pixels, order, group = _last_writes(host)
        parts = [order, group, (~self.invalid_at(host)).long(), pixels]
        if track_uniform:
            parts += [uniform.long(), self._local_of_flat(host)]
        on_device = torch.cat(parts).to(device, non_blocking=True).split([p.numel() for p in parts])
        return self._write(error, *on_device, trained=trained)

    def _write(
        self, error: Tensor, order: Tensor, group: Tensor, valid: Tensor, pixels: Tensor,
        uniform: Optional[Tensor] = None, local: Optional[Tensor] = None, trained: bool = True,
    ) -> Tensor:
        """``update``'s device half: fixed-size ops only (no count, mask or value read back)."""
        device, num_rays, valid = error.device, error.numel(), valid.bool()
        finite = torch.isfinite(error)
        keep = finite & valid
        kept_sorted = keep.index_select(0, order)
        # The last kept ray of each pixel, in the order the rays were given (the sort is stable).
        position = torch.where(kept_sorted, torch.arange(num_rays, device=device), -1)
        last = torch.full_like(pixels, -1).scatter_reduce_(0, group, position, "amax")
        written = last >= 0
        source = order.index_select(0, last.clamp(min=0))
        if trained and self.visits is not None:
            counts = torch.zeros_like(pixels, dtype=torch.int32).scatter_add_(0, group, kept_sorted.int())
            seen = self.visits.index_select(0, pixels).int() + counts
            self.visits.index_copy_(0, pixels, seen.clamp_(max=VISITS_MAX).to(torch.uint8))
        if uniform is not None:
            chosen = keep & uniform.bool()
            self._add_uniform(local, torch.where(chosen, error, 0.0), chosen)
        old = self.fitness.index_select(0, pixels)
        old_epoch = self.epoch.index_select(0, pixels)
        fmax = torch.finfo(self.fitness.dtype).max
        values = torch.where(written, error.index_select(0, source).clamp(0.0, fmax).to(self.fitness.dtype), old)
        self.fitness.index_copy_(0, pixels, values)
        self.epoch.index_copy_(0, pixels, torch.where(written, self.current_epoch, old_epoch))
        skipped = num_rays - finite.sum()
        zero = self.tallies.new_zeros(())
        self.tallies += torch.stack([
            (written & (old_epoch == 0)).sum().double(),
            torch.where(written, values, 0).sum(dtype=torch.float64) - torch.where(written, old, 0).sum(dtype=torch.float64),
            torch.where(keep, error, 0.0).sum(dtype=torch.float64) if trained else zero,
            keep.sum().double() if trained else zero,
            skipped.double(),
        ])
        return skipped

    def _grow_uniform(self, epochs: int) -> None:
        have = self.uniform.shape[2]
        if epochs > have:
            grown = torch.zeros(self.num_images, 2, max(2 * have, epochs), dtype=self.uniform.dtype, device=self.uniform.device)
            grown[:, :, :have] = self.uniform
            self.uniform = grown

    def load_uniform(self, local: int, saved: Optional[Tensor]) -> None:
        """Restore one image's uniform-draw sums ([2, E] from a checkpoint; None clears them)."""
        self.uniform[local].zero_()
        if saved is not None:
            self._grow_uniform(saved.shape[1])
            self.uniform[local, :, : saved.shape[1]] = saved.to(self.uniform)

    def _add_uniform(self, local: Tensor, error: Tensor, chosen: Tensor) -> None:
        """Add the ``chosen`` rays (their images ``local``) to this epoch's uniform-draw sums."""
        self._grow_uniform(self.current_epoch + 1)
        self.uniform[:, 0, self.current_epoch].index_add_(0, local, chosen.to(self.uniform.dtype))
        self.uniform[:, 1, self.current_epoch].index_add_(0, local, error.to(self.uniform.dtype))

    def uniform_level_ratios(self, reduce_sum: ReduceSum = _identity) -> Tensor:
        """[current_epoch + 1] x of each epoch: the mean uniformly drawn error then over the latest one.

        The training error level (``stale_ratios``) cannot serve here: it is the mean error of what
        was trained, which rises whenever the selection moves onto persistent error. Uniform draws
        are the unbiased level. Epochs without them take the level before them (1 before any).
        """
        epochs = self.current_epoch + 1
        self._grow_uniform(epochs)
        totals = reduce_sum(self.uniform[:, :, :epochs].sum(0))  # [2, E] over all shards
        level = torch.where(totals[0] > 0, totals[1] / totals[0].clamp(min=1), torch.full_like(totals[1], math.nan))
        filled, last = [], math.nan
        for value in level.tolist():
            last = value if math.isfinite(value) and value > 0 else last
            filled.append(last)
        known = torch.tensor(filled, dtype=torch.float64)
        x = known / filled[-1] if math.isfinite(filled[-1]) else torch.ones_like(known)
        return torch.where(torch.isfinite(x), x, torch.ones_like(x)).clamp(min=1e-6)

    def uniform_floors(self, level_ratio: Tensor) -> Tensor:
        """[N] each image's persistent error floor (``evos_nerf.core.learnable``)."""
        epochs = level_ratio.numel()
        return fit_floors(self.uniform[:, 0, :epochs], self.uniform[:, 1, :epochs], level_ratio).float()

    # -- epochs (key iterations) -----------------------------------------------------------------
    def close_epoch(self, total: float, count: float) -> None:
        """End the current epoch with its error level over all shards (``total`` / ``count``), start the next."""
        level = total / count if count > 0 else math.nan
        while len(self.error_levels) <= self.current_epoch:
            self.error_levels.append(math.nan)
        self.error_levels[self.current_epoch] = level
        self.current_epoch = min(self.current_epoch + 1, EPOCH_MAX)
        self.epoch_sum, self.epoch_count = 0.0, 0

    def stale_ratios(self) -> Tensor:
        """[current_epoch + 1] float32: factor on an error measured in each epoch to estimate it now.

        level(latest closed epoch) / level(epoch of the measurement), at most 1 (errors are only
        ever corrected downward); epochs without a level take the last one before them.
        """
        levels, last = [], math.nan
        for j in range(self.current_epoch + 1):
            value = self.error_levels[j] if j < len(self.error_levels) else math.nan
            last = value if math.isfinite(value) and value > 0 else last
            levels.append(last)
        now = levels[-1]
        table = torch.ones(self.current_epoch + 1, dtype=torch.float32)
        if math.isfinite(now):
            known = torch.tensor(levels, dtype=torch.float64)
            ratio = (now / known).clamp(max=1.0)
            table = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio)).float()
        return table.to(self.fitness.device)

    # -- key iterations --------------------------------------------------------------------------
    def ranking_scores(
        self,
        stale_correction: bool,
        reduce_sum: ReduceSum = _identity,
        unvisited_prior: UnvisitedPrior = "neighbourhood",
        prior_block: Blocks = 16,
        with_edges: bool = False,
        fitness: Fitness = "error",
        second_parent: CrossoverPrior = "edges",
        shrinkage: float = 0.0,
        evidence: Optional[ViewBlocks] = None,
    ) -> Tuple[Tensor, Optional[Tensor], Tuple[float, float]]:
        """(e, h, (sum e, sum h)): every pixel's estimated error now, its error weighted by the crossover
        prior (the second parent's score), and their sums over this shard's valid pixels. Masked pixels are -inf in both (never ranked).

        e: stale errors rescaled by ``stale_ratios``, never-visited pixels estimated by
        ``unvisited_prior``; h = e * the crossover prior ``second_parent`` (edges or smooth; None unless
        ``with_edges``, which names the paper's edge parent but enables either). Two passes per image, each over a cache-sized slice, so the cost is O(P) with a small constant. With ``fitness``
        "learnable", e is only the learnable part of each error, stale-corrected by construction (by
        the uniformly drawn error level, ``uniform_level_ratios``), whatever ``stale_correction`` says.
        With "relative", each image's estimates are divided by their mean over its valid pixels.
        ``shrinkage`` k blends each measured pixel's estimate with its prior (``fill_unmeasured``).
        ``evidence``: the other views' errors per block, used by the ``crossview`` prior.
        """
        e = torch.empty(self.num_pixels, dtype=torch.float32, device=self.fitness.device)
        learnable = fitness == "learnable"
        if learnable and self.uniform is None:
            raise RuntimeError("the learnable-error fitness needs a store built with track_uniform=True")
        ratios = self.stale_ratios() if stale_correction and not learnable else None
        if learnable:
            level_ratio = self.uniform_level_ratios(reduce_sum)
            floors = self.uniform_floors(level_ratio).tolist()
            level_ratio = level_ratio.float().to(e.device)
        masked = self.num_valid < self.num_pixels  # masked pixels are NaN: only then are they handled
        # Pass 1: corrected measured errors, and their total for the global prior.
        total = 0.0
        for local in range(self.num_images):
            start, end = self.image_range(local)
            out = e[start:end]
            out.copy_(self.fitness[start:end])
            if masked:
                torch.nan_to_num(out, nan=0.0, out=out)
            if learnable:
                out.copy_(learnable_error(out, level_ratio.index_select(0, self.epoch[start:end].int()), floors[local]))
            elif ratios is not None:
                out.mul_(ratios.index_select(0, self.epoch[start:end].int()))
            total += float(out.sum())  # never-measured pixels hold 0
        totals = reduce_sum(torch.tensor([total, float(self.num_measured)], dtype=torch.float64))
        prior = float(totals[0] / totals[1]) if float(totals[1]) > 0 else 1.0
        # Pass 2: never-visited estimates, the edge-weighted errors, masked pixels to -inf.
        h = torch.empty_like(e) if with_edges else None
        sum_e = sum_h = 0.0
        for local in range(self.num_images):
            start, end = self.image_range(local)
            out = e[start:end]
            measured = self.epoch[start:end].clamp(max=1).float()  # cheaper than a bool mask
            if masked:
                valid = (~torch.isnan(self.fitness[start:end])).float()
                measured.mul_(valid)
            if unvisited_prior != "mean":  # neighbourhood, and the crossview priors that build on it
                readings = None
                if unvisited_prior in CROSSVIEW_PRIORS and evidence is not None:
                    readings = evidence.image(int(self.cameras[local]))
                fill_unmeasured(out, measured, int(self.heights[local]), int(self.widths[local]), prior, prior_block,
                                shrinkage=shrinkage, evidence=readings, pooled=unvisited_prior == "crossview-pooled")
            elif shrinkage > 0:
                shrink_toward(out, prior, measured, shrinkage)
            else:
                out.addcmul_(torch.full_like(out, prior), 1.0 - measured)
            if masked:
                out.mul_(valid)
            if fitness == "relative":
                _divide_by_mean(out, float(valid.sum()) if masked else float(end - start))
            sum_e += float(out.sum())
            if h is not None:
                edge = h[start:end]
                torch.mul(out, self.crossover_prior(local, second_parent), out=edge)
                sum_h += float(edge.sum())
            if masked:
                invalid = valid == 0
                out.masked_fill_(invalid, -math.inf)
                if h is not None:
                    h[start:end].masked_fill_(invalid, -math.inf)
        return e, h, (sum_e, sum_h)

    def corrected_fitness(
        self,
        stale_correction: bool,
        reduce_sum: ReduceSum = _identity,
        unvisited_prior: UnvisitedPrior = "neighbourhood",
        prior_block: Blocks = 16,
        fitness: Fitness = "error",
    ) -> Tensor:
        """[P] float32 fitness as of now (stale errors rescaled, never-visited pixels estimated); -inf where masked."""
        return self.ranking_scores(stale_correction, reduce_sum, unvisited_prior, prior_block, fitness=fitness)[0]

    # -- per-step selection ----------------------------------------------------------------------
    def sample_uniform(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Uniform over valid pixels: the uniform baseline, a paused selector, or before any ranking. O(batch).

        On the generator's device (the host), like every draw: see ``CandidatePool``."""
        num_invalid = self.num_pixels - self.num_valid
        excluded = self.invalid_at if num_invalid else None
        idx = mutate(self.num_pixels, batch_size, excluded, generator, generator.device, num_invalid)
        return fill(idx, batch_size, generator)

    # -- state ---------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes of the per-pixel buffers plus the per-image geometry."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def bytes_per_pixel(self) -> float:
        """Per-pixel buffers only: 4 (fp16 fitness + int16 epoch), 5 with visit counts."""
        per_pixel = [b for b in (self.fitness, self.epoch, self.visits) if b is not None]
        return sum(b.element_size() for b in per_pixel)

    def describe(self) -> Tuple[str, str]:
        """(size, per-pixel cost) lines for the training log."""
        counts = ", uint8 selection count" if self.visits is not None else ""
        dtype = str(self.fitness.dtype).removeprefix("torch.")
        return (
            f"{self.num_images} images, {self.num_pixels:,} pixels, {self.memory_bytes() / 2**20:.1f} MiB",
            f"{self.bytes_per_pixel():g} bytes ({dtype} fitness, int16 epoch{counts})",
        )


def _divide_by_mean(errors: Tensor, count: float) -> None:
    """In place: one image's errors (masked pixels at 0) over their mean over ``count`` valid pixels."""
    mean = float(errors.sum()) / count if count > 0 else 0.0
    if mean > 0 and math.isfinite(mean):
        errors.div_(mean)


def pixel_offsets(counts: Tensor) -> Tensor:
    """Flat index of each image's first pixel, plus the total: [N + 1] long (images laid end to end)."""
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts.long(), 0)
    return offsets


def _last_writes(flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(distinct pixels ascending, the stable sort's order of the rays, each sorted ray's pixel's position).

    One stable sort: the writes then touch the store in ascending order (cache-friendly) with
    distinct indices, which ``index_copy_`` needs to be deterministic, and a pixel's rays keep the
    order they were given in, so its last ray is its last position."""
    ordered, order = torch.sort(flat, stable=True)
    is_last = torch.ones_like(ordered, dtype=torch.bool)
    torch.ne(ordered[1:], ordered[:-1], out=is_last[:-1])
    group = torch.cumsum(is_last, 0) - is_last.long()
    return ordered.masked_select(is_last), order, group


def fill(idx: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Pad by repetition when fewer distinct pixels exist than the batch asks for (tiny scenes)."""
    if idx.numel() >= batch_size or idx.numel() == 0:
        return idx[:batch_size]
    extra = torch.randint(0, idx.numel(), (batch_size - idx.numel(),), generator=generator, device=generator.device)
    return torch.cat([idx, idx[extra.to(idx.device)]])
