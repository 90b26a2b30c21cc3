"""The importance samplers users would pick instead of EVOS, built on the same fitness store.

* :class:`ErrorMap`, after instant-ngp (Müller et al., SIGGRAPH 2022; NVlabs/instant-ngp
  ``src/testbed_nerf.cu``: ``train_nerf``, ``compute_loss_kernel_train_nerf``,
  ``construct_cdf_2d``; ``include/neural-graphics-primitives/nerf_device.cuh``: ``sample_cdf_2d``;
  neuralsim's ``nr3d_lib/models/importance.py`` ``ErrorMap`` does the same in PyTorch). Each
  training image keeps a low-resolution map of the loss of the rays trained on it, summed over a
  window of steps (128, growing x1.5 after every window) and then turned into sampling CDFs. Images
  are drawn in proportion to their total (mixed with 10% uniform), positions half uniformly, half
  in proportion to the map (mixed with 1% uniform), uniformly inside the chosen cell. Each splatted
  loss is divided by the density it was sampled with, so the map estimates the error itself rather
  than how often a region was sampled. The training loss is not reweighted (instant-ngp doesn't).
  Deliberate differences: the map resolution is chosen per window with instant-ngp's formula
  3.5 (window * batch / images)^(1/4); the splat divides by the true mixture density where
  instant-ngp ignores its 50% uniform branch.
* :class:`SoftMining`, after Kheradmand et al., "Accelerating Neural Field Training via Soft
  Mining", CVPR 2024 (ubc-vision/nf-soft-mining ``examples/train_ngp_nerf_prop.py``). Pixels are
  drawn in proportion to their error (the code's L1 importance; here the root of the cached squared
  error), with a uniform share (the code's ``minpct`` = 10%), and each ray's loss is weighted by
  (M q)^-a, with q its sampling probability among M pixels: a = 1 is unbiased importance sampling,
  a = 0 hard mining. a warms up as min(step / 1000, alpha) and the weights are clamped at their
  batch mean + std, as in the code. The Langevin Monte-Carlo chains of the paper are left out:
  pixels are discrete here, so exact inverse-CDF sampling replaces them.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from evos_nerf.core.store import FitnessStore


def mixture_weights(values: Tensor, uniform: float, valid: Optional[Tensor] = None) -> Tensor:
    """(1 - u) * values / sum + u / n over the valid entries (float64 probabilities, sum 1)."""
    v = values.double().clamp_min(0)
    n = v.numel()
    if valid is not None:
        v = torch.where(valid, v, torch.zeros_like(v))
        n = int(valid.sum())
    total = float(v.sum())
    flat = torch.full_like(v, 1.0 / max(n, 1))
    if valid is not None:
        flat = torch.where(valid, flat, torch.zeros_like(flat))
    if total <= 0 or not math.isfinite(total):
        return flat
    return (1.0 - uniform) * v / total + uniform * flat


def draw_from_cdf(cdf: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` indices drawn with replacement from the distribution whose inclusive CDF is ``cdf``."""
    u = torch.rand(count, generator=generator, device=generator.device, dtype=torch.float64)
    u = u.to(cdf.device, non_blocking=True)  # to a GPU's CDF without waiting for its queued kernels
    return torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=cdf.numel() - 1)


class ErrorMap:
    """instant-ngp's per-image error maps over the images of one store (see the module docstring)."""

    MIN_PDF = 0.01
    """Uniform share inside an image's cell distribution (instant-ngp's MIN_PDF)."""
    MIN_PMF_IMAGE = 0.1
    """Uniform share of the image distribution (instant-ngp's MIN_PMF)."""

    def __init__(self, store: FitnessStore, batch_size: int, uniform: float = 0.5, window: int = 128, growth: float = 1.5):
        self.store = store
        # Geometry and CDFs on the host, where the draw runs; the map being summed sits on the
        # store's device, beside the model's errors, so a step's splat reads nothing back from a GPU.
        self.heights, self.widths, self.offsets = store.heights.cpu(), store.widths.cpu(), store.offsets.cpu()
        self.device = store.fitness.device
        self.batch_size = int(batch_size)
        self.uniform = float(uniform)
        self.window = float(window)
        self.growth = float(growth)
        self.steps_in_window = 0
        self.cell_cdf: Optional[Tensor] = None
        """[images, res * res] inclusive CDF per image, or None before the first window ends."""
        self.cell_pmf: Optional[Tensor] = None
        self.image_pmf: Optional[Tensor] = None
        self.image_cdf: Optional[Tensor] = None
        self.built_res = 0
        self._start_window()

    # -- accumulation ---------------------------------------------------------------------------
    def _resolution(self) -> int:
        per_image = self.window * self.batch_size / self.store.num_images
        side = int(min(int(self.heights.min()), int(self.widths.min())))
        return max(1, min(int(3.5 * per_image**0.25), side))

    def _start_window(self) -> None:
        self.res = self._resolution()
        self.errors = torch.zeros(self.store.num_images, self.res, self.res, dtype=torch.float32, device=self.device)

    def _locate(self, flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Flat indices -> (local image, y, x) on the CPU."""
        flat = flat.long().cpu()
        local = torch.searchsorted(self.offsets, flat, right=True) - 1
        rem = flat - self.offsets[local]
        return local, rem // self.widths[local], rem % self.widths[local]

    def _cells(self, local: Tensor, y: Tensor, x: Tensor, res: int) -> Tuple[Tensor, Tensor]:
        """Continuous map coordinates of pixel centres at resolution ``res``."""
        h, w = self.heights[local].double(), self.widths[local].double()
        return (y.double() + 0.5) / h * res, (x.double() + 0.5) / w * res

    def density(self, flat: Tensor) -> Tensor:
        """Sampling density of each pixel relative to uniform sampling (1 before the first window)."""
        flat = flat.long().cpu()
        if self.cell_pmf is None:
            return torch.ones(flat.numel(), dtype=torch.float64)
        local, y, x = self._locate(flat)
        cy, cx = self._cells(local, y, x, self.built_res)
        cell = cy.long().clamp(0, self.built_res - 1) * self.built_res + cx.long().clamp(0, self.built_res - 1)
        within = self.uniform + (1.0 - self.uniform) * self.cell_pmf[local, cell] * self.built_res**2
        return self.image_pmf[local] * self.store.num_images * within

    def observe(self, flat: Tensor, errors: Tensor) -> None:
        """Splat the trained rays' losses (divided by their sampling density) bilinearly into the maps.

        Where each ray lands and with what weights is worked out on the host, from the drawn
        indices; the losses stay on their device, and a non-finite one adds nothing (a zero, not
        a filter, whose size a GPU would have to report)."""
        flat = flat.long().cpu()  # drawn on the host: no copy
        device = self.errors.device
        errors = errors.detach().double().to(device, non_blocking=True)  # the model's: already there
        local, y, x = self._locate(flat)
        cy, cx = self._cells(local, y, x, self.res)
        top = self.res - 1 - 1e-4
        py, px = (cy - 0.5).clamp(0, top), (cx - 0.5).clamp(0, top)
        y0, x0 = py.floor().long(), px.floor().long()
        fy, fx = py - y0, px - x0
        base = local * self.res * self.res
        cells, weights = [], []
        for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            yy, xx = (y0 + dy).clamp(max=self.res - 1), (x0 + dx).clamp(max=self.res - 1)
            cells.append(base + yy * self.res + xx)
            weights.append(wgt)
        cells_d = torch.stack(cells).to(device, non_blocking=True)
        weights_d = torch.stack([*weights, self.density(flat)]).to(device, non_blocking=True)
        value = torch.where(torch.isfinite(errors), errors / weights_d[4], torch.zeros_like(errors))
        target = self.errors.view(-1)
        for corner in range(4):
            target.index_add_(0, cells_d[corner], (value * weights_d[corner]).float())
        self.steps_in_window += 1
        if self.steps_in_window >= self.window:
            self._build()
            self.window *= self.growth
            self.steps_in_window = 0
            self._start_window()

    def _build(self) -> None:
        """Window over: CDFs from the summed map (what instant-ngp's construct_cdf_2d/1d does)."""
        n, res = self.store.num_images, self.res
        maps = self.errors.double().view(n, res * res).cpu() + 1e-10  # once a window: the one read-back
        totals = maps.sum(dim=1)
        self.cell_pmf = (1.0 - self.MIN_PDF) * maps / totals[:, None] + self.MIN_PDF / (res * res)
        self.cell_cdf = torch.cumsum(self.cell_pmf, dim=1)
        self.image_pmf = mixture_weights(totals, self.MIN_PMF_IMAGE)
        self.image_cdf = torch.cumsum(self.image_pmf, dim=0)
        self.built_res = res

    # -- sampling -------------------------------------------------------------------------------
    def draw(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Flat indices of one batch (uniform over pixels until the first window ends)."""
        if self.cell_cdf is None:
            return self.store.sample_uniform(batch_size, generator)
        gen_device = generator.device
        local = draw_from_cdf(self.image_cdf, batch_size, generator).cpu()
        h, w = self.heights[local].double(), self.widths[local].double()
        res = self.built_res
        u = torch.rand(batch_size, 3, generator=generator, device=gen_device, dtype=torch.float64).cpu()
        from_map = u[:, 0] >= self.uniform
        fy, fx = u[:, 1], u[:, 2]  # uniform position: in the whole image, or inside the chosen cell
        if bool(from_map.any()):
            rows = self.cell_cdf[local[from_map]]
            pick = torch.rand(rows.shape[0], 1, generator=generator, device=gen_device, dtype=torch.float64).cpu()
            cell = torch.searchsorted(rows, pick * rows[:, -1:], right=True).squeeze(1).clamp_(max=res * res - 1)
            fy = fy.clone()
            fx = fx.clone()
            fy[from_map] = (cell // res + fy[from_map]) / res
            fx[from_map] = (cell % res + fx[from_map]) / res
        y = (fy * h).long().minimum(h.long() - 1)
        x = (fx * w).long().minimum(w.long() - 1)
        flat = self.offsets[local] + y * self.widths[local] + x
        return replace_invalid(self.store, flat, generator)  # on the host, like every draw

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "window": self.window, "steps_in_window": self.steps_in_window, "res": self.res, "errors": self.errors,
            "built_res": self.built_res, "cell_pmf": self.cell_pmf, "image_pmf": self.image_pmf,
        }

    def state_tensors(self) -> Dict[str, Tensor]:
        """The state as named tensors (checkpoint entries); the CDFs are left out until built."""
        out = {
            "scalars": torch.tensor([self.window, self.steps_in_window, self.res, self.built_res], dtype=torch.float64),
            "errors": self.errors,
        }
        if self.cell_pmf is not None:
            out.update(cell_pmf=self.cell_pmf, image_pmf=self.image_pmf)
        return out

    def load_state_tensors(self, state: Dict[str, Tensor]) -> None:
        window, steps, res, built = state["scalars"].tolist()
        self.load_state_dict({
            "window": window, "steps_in_window": steps, "res": res, "errors": state["errors"], "built_res": built,
            "cell_pmf": state.get("cell_pmf"), "image_pmf": state.get("image_pmf"),
        })

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.window, self.steps_in_window = float(state["window"]), int(state["steps_in_window"])
        self.res, self.errors, self.built_res = int(state["res"]), state["errors"].float().to(self.device), int(state["built_res"])
        self.cell_pmf, self.image_pmf = state["cell_pmf"], state["image_pmf"]
        if self.cell_pmf is not None:
            self.cell_cdf = torch.cumsum(self.cell_pmf, dim=1)
            self.image_cdf = torch.cumsum(self.image_pmf, dim=0)


class SoftMining:
    """Soft mining's importance sampling over the store's pixels (see the module docstring)."""

    def __init__(self, store: FitnessStore, alpha: float = 0.8, uniform: float = 0.1, warmup: int = 1000) -> None:
        self.store = store
        self.alpha, self.uniform, self.warmup = float(alpha), float(uniform), int(warmup)
        self.probability: Optional[Tensor] = None
        """[pixels] sampling probability of each pixel per ray (float64, sums to 1)."""
        self.cdf: Optional[Tensor] = None

    def rebuild(self, error_estimate: Tensor) -> None:
        """Sampling distribution from every pixel's current error estimate (squared error, >= 0; masked pixels any value)."""
        self.probability = mixture_weights(error_estimate.float().clamp_min(0).sqrt(), self.uniform, self.store.valid)
        self.cdf = torch.cumsum(self.probability, dim=0)

    def exponent(self, step: int) -> float:
        """The weight exponent's warm-up: min(step / warmup, alpha), as in the official code."""
        return min(step / max(self.warmup, 1), self.alpha)

    def draw(self, batch_size: int, step: int, generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
        """(flat indices, per-ray loss weights); uniform and unweighted before the first rebuild."""
        if self.cdf is None:
            return self.store.sample_uniform(batch_size, generator), None
        flat = draw_from_cdf(self.cdf, batch_size, generator)
        weights = (self.store.num_valid * self.probability[flat]).pow(-self.exponent(step))
        if weights.numel() > 1:  # the cap stays a tensor: on a GPU store the draw reads nothing back
            weights = weights.clamp(max=weights.mean() + weights.std())
        return flat.to(self.store.fitness.device), weights.float()


def replace_invalid(store: FitnessStore, flat: Tensor, generator: torch.Generator) -> Tensor:
    """Swap masked-out pixels for uniform valid ones (samplers that draw by position ignore masks)."""
    bad = store.invalid_at(flat)
    if bool(bad.any()):
        flat = flat.clone()
        flat[bad] = store.sample_uniform(int(bad.sum()), generator)
    return flat
