"""Evidence for never-visited pixels from the other views: a trained ray's error, seen from every camera.

At 512 rays a step a real capture's training pixels are mostly never measured (90-97% of the
pool is ranked by the neighbourhood prior alone, README), and the prior only knows the few, stale
measurements of a pixel's own image. But a NeRF's error lives in the scene, not in an image: a
region the field has not learned looks wrong from every camera that sees it. A trained ray lands
on a surface point (its depth); projected into the other training cameras, its fresh error is a
noisy reading of what those cameras' pixels near that point would show. The error that views
agree on is also the error the field can still learn, while one view's exposure, blur or pose
error stays in that view.

``CrossViewErrors`` collects these readings between two key iterations as sums and counts per
block of every camera (the neighbourhood prior's finest block), and hands them to the ranking as
one more level of the prior's shrinkage (``evos_nerf.core.neighbourhood.block_estimate``): a
block's own measurements are shrunk toward its cross-view estimate, which is shrunk toward the
image's mean. Then they start again, so the evidence is never older than one key interval.

An optional occlusion test (``occlusion``, a depth tolerance): a camera's own trained rays also
tell where its visible surface lies, so each block keeps the deepest surface depth its rays found
(in the camera's z). A reading whose point lies more than the tolerance behind that depth is
hidden from the camera there (the far side of an object, seen through it) and is dropped: it
says nothing about what that camera's pixels show. The deepest, not the mean, because a block
can hold a near object and the background behind it, and a point is visible somewhere in the
block if it is no deeper than the deepest surface seen there; a block none of whose rays has been
trained yet keeps every reading. The depths of one key interval are agreed over ranks with the
readings (a sum is a maximum here: only the rank that owns a camera trains its rays) and stay
until the block is trained again.

Approximations, on purpose: pinhole projection (lens distortion is left out: at 16 px blocks it
moves a point by a few pixels on fox's half-size images), the poses as the dataparser gives them
(not the camera optimizer's refinements), and the median depth of each ray as its surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from evos_nerf.core.store import ReduceSum, pixel_offsets


@dataclass(frozen=True)
class PinholeViews:
    """Every training camera, in nerfstudio's convention: camera-to-world [C, 3, 4] with the camera
    looking down -z, y up; pixel (row y, column x) has its centre at (x + 0.5, y + 0.5)."""

    camera_to_worlds: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    heights: Tensor
    widths: Tensor

    @property
    def num_cameras(self) -> int:
        return int(self.heights.numel())

    def to(self, device: torch.device) -> "PinholeViews":
        return PinholeViews(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


def project(views: PinholeViews, points: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """World points [R, 3] -> (rows, columns, inside), each [R, C]: the pixel of each point in each
    camera, and whether the point lies in front of that camera and inside its image."""
    rows, cols, inside, _ = project_with_depth(views, points)
    return rows, cols, inside


def project_with_depth(views: PinholeViews, points: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``project`` plus each point's depth along each camera's viewing axis (its z), [R, C]."""
    rotation = views.camera_to_worlds[:, :3, :3].to(points.dtype)
    offset = points[:, None, :] - views.camera_to_worlds[:, :3, 3].to(points.dtype)[None]
    local = torch.einsum("cji,rcj->rci", rotation, offset)  # R^T (X - t): world to camera
    depth = -local[..., 2]
    in_front = depth > 1e-6
    safe = torch.where(in_front, depth, torch.ones_like(depth))
    u = views.cx.view(1, -1) + views.fx.view(1, -1) * local[..., 0] / safe
    v = views.cy.view(1, -1) - views.fy.view(1, -1) * local[..., 1] / safe
    finite = torch.isfinite(u) & torch.isfinite(v)
    cols = torch.floor(torch.where(finite, u, torch.full_like(u, -1.0))).long()
    rows = torch.floor(torch.where(finite, v, torch.full_like(v, -1.0))).long()
    inside = in_front & finite & (cols >= 0) & (rows >= 0)
    inside &= (cols < views.widths.view(1, -1)) & (rows < views.heights.view(1, -1))
    return rows, cols, inside, depth


@dataclass
class ViewBlocks:
    """Cross-view error sums and counts per block of every camera, agreed over all ranks."""

    sums: Tensor
    counts: Tensor
    offsets: Tensor
    block_rows: Tensor
    block_cols: Tensor

    def image(self, camera: int) -> Tuple[Tensor, Tensor]:
        """(sums, counts), each [ceil(H/b), ceil(W/b)] float32, of one (absolute) camera."""
        start, end = int(self.offsets[camera]), int(self.offsets[camera + 1])
        shape = (int(self.block_rows[camera]), int(self.block_cols[camera]))
        return self.sums[start:end].view(shape).float(), self.counts[start:end].view(shape).float()


class CrossViewErrors:
    """Trained rays' errors at their surface points, projected into every other camera's blocks."""

    def __init__(
        self, views: PinholeViews, block: int, device: torch.device = torch.device("cpu"),
        occlusion: Optional[float] = None,
    ) -> None:
        """``occlusion``: drop a reading that lies more than this share deeper than the deepest surface
        its camera's own rays found in that block (module docstring); None keeps every reading."""
        if block < 1:
            raise ValueError(f"cross-view block size must be >= 1, got {block}")
        if occlusion is not None and not (occlusion >= 0 and math.isfinite(occlusion)):
            raise ValueError(f"cross-view occlusion tolerance must be a finite number >= 0, got {occlusion}")
        self.block = int(block)
        self.occlusion = occlusion
        self.block_rows = -(-views.heights.long() // block)
        self.block_cols = -(-views.widths.long() // block)
        self.offsets = pixel_offsets(self.block_rows * self.block_cols)
        """Flat index of each camera's first block, plus the total (the store's layout, for blocks)."""
        self.cameras = torch.arange(views.num_cameras)
        self.views = views
        self.sums = torch.zeros(int(self.offsets[-1]), dtype=torch.float64)
        self.counts = torch.zeros_like(self.sums)
        self.surface_now = torch.zeros_like(self.sums)
        """Deepest surface depth this rank's own rays found per block since the last key iteration (0: none)."""
        self.surface = torch.zeros_like(self.sums)
        """The same, agreed over ranks at the last key iteration where a block was trained (0: never)."""
        self.to_(device)

    def to_(self, device: torch.device) -> None:
        """Move everything to ``device`` (the store's), in place."""
        for name in ("block_rows", "block_cols", "offsets", "cameras", "sums", "counts", "surface_now", "surface"):
            setattr(self, name, getattr(self, name).to(device))
        self.views = self.views.to(device)

    def add(self, points: Tensor, errors: Tensor, source: Tensor) -> None:
        """Record rays (surface points [R, 3], errors [R], absolute source camera [R]) in every camera
        that sees their point, except the camera they were trained from (its own store has them)."""
        device = self.sums.device
        points, errors, source = points.detach().to(device).float(), errors.detach().to(device).double(), source.to(device)
        keep = torch.isfinite(points).all(dim=-1) & torch.isfinite(errors)
        points, errors, source = points[keep], errors[keep], source[keep]
        if points.numel() == 0:
            return
        rows, cols, inside, depth = project_with_depth(self.views, points)
        index = self.offsets[:-1].view(1, -1) + (rows // self.block) * self.block_cols.view(1, -1) + cols // self.block
        own = self.cameras.view(1, -1) == source.view(-1, 1)
        if self.occlusion is not None:
            self.surface_now.scatter_reduce_(0, index[inside & own], depth[inside & own].double(), reduce="amax")
        inside &= ~own
        readings = errors.view(-1, 1).expand_as(inside)[inside]
        index = index[inside]
        if self.occlusion is not None:
            deepest = torch.maximum(self.surface, self.surface_now)[index]
            visible = (deepest <= 0) | (depth[inside].double() <= (1.0 + self.occlusion) * deepest)
            index, readings = index[visible], readings[visible]
        self.sums.index_add_(0, index, readings)
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=self.counts.dtype))

    def state_tensor(self) -> Tensor:
        """[4, blocks] float64: this rank's sums, counts and surface depths (checkpoints)."""
        return torch.stack([self.sums, self.counts, self.surface_now, self.surface])

    def load_state_tensor(self, state: Tensor) -> None:
        """Also takes the [2, blocks] of checkpoints from before the occlusion test (no depths yet)."""
        if state.dim() != 2 or state.shape[0] not in (2, 4) or state.shape[1] != self.sums.numel():
            raise ValueError(f"crossview readings of shape {tuple(state.shape)} for {self.sums.numel()} blocks")
        rows = list(state) + [torch.zeros_like(self.sums)] * (4 - state.shape[0])
        for name, row in zip(("sums", "counts", "surface_now", "surface"), rows):
            getattr(self, name).copy_(row)

    def take(self, reduce_sum: ReduceSum) -> ViewBlocks:
        """The evidence since the last call, summed over all ranks (a collective); starts afresh."""
        agreed = reduce_sum(torch.stack([self.sums, self.counts, self.surface_now]))  # a new tensor
        self.sums.zero_()
        self.counts.zero_()
        # Each camera's rays are trained on one rank only, so the sum of the ranks' maxima is the maximum.
        self.surface.copy_(torch.where(agreed[2] > 0, agreed[2], self.surface))
        self.surface_now.zero_()
        return ViewBlocks(agreed[0], agreed[1], self.offsets, self.block_rows, self.block_cols)
