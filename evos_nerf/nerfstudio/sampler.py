"""nerfstudio's side of the selector: a PixelSampler whose collate step asks the selector for rays.

It overrides the collate step (not ``sample_method``) because only there does it see
``image_batch["image_idx"]``, the absolute camera indices the fitness is keyed by. Everything about
*which* rays lives in ``evos_nerf.core.selector.RaySelector``; this adapter gathers their pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Type

import torch
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from torch import Tensor

from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.errors import UserInputError

FLAG = "--pipeline.datamanager.pixel-sampler."


@dataclass
class EvosPixelSamplerConfig(PixelSamplerConfig, SelectorConfig):
    """EVOS selection for rays. Every flag here is a CLI flag under --pipeline.datamanager.pixel-sampler."""

    _target: Type = field(default_factory=lambda: EvosPixelSampler)

    def validate(self, prefix: str = FLAG) -> "EvosPixelSamplerConfig":
        SelectorConfig.validate(self, prefix)
        # Upstream flags this sampler cannot honour are refused rather than silently ignored.
        if self.is_equirectangular:
            raise UserInputError(f"{prefix}is-equirectangular is not supported by EVOS (it samples pixels, not directions)")
        if self.fisheye_crop_radius is not None:
            raise UserInputError(f"{prefix}fisheye-crop-radius is not supported by EVOS; mask the pixels instead")
        return self


def batch_positions(image_idx: Tensor, num_images: int) -> Tensor:
    """Absolute camera index -> position in an image batch (-1 where a camera is absent)."""
    pos = torch.full((num_images,), -1, dtype=torch.long)
    pos[image_idx.cpu().long()] = torch.arange(image_idx.numel())
    return pos


class EvosPixelSampler(PixelSampler):
    """Gathers the pixels the selector chooses from a cached image batch."""

    config: EvosPixelSamplerConfig

    def __init__(self, config: EvosPixelSamplerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        config.validate()
        self.selector: Optional[RaySelector] = None
        self._flat_cache: Dict[str, Tensor] = {}

    def attach(self, selector: RaySelector) -> None:
        self.selector = selector

    def _select(self, num_rays: int):
        assert self.selector is not None, "sampler used before attach()"
        selection = self.selector.select(num_rays)
        return selection, self.selector.store.unflatten(selection.flat).cpu()

    def _positions(self, image_idx: Tensor) -> Tensor:
        return batch_positions(image_idx, self.selector.store.num_cameras)

    @staticmethod
    def _finish(collated: Dict, selection, indices: Tensor, batch: Dict, keep_full_image: bool) -> Dict:
        collated["indices"] = indices
        collated["evos_flat"] = selection.flat
        if selection.uniform is not None:
            collated["evos_uniform"] = selection.uniform
        if selection.weights is not None:
            collated["ray_weights"] = selection.weights.to(batch["image"][0].device if isinstance(batch["image"], list) else batch["image"].device)
        if keep_full_image:
            collated["full_image"] = batch["image"]
        return collated

    def collate_image_dataset_batch(self, batch: Dict, num_rays_per_batch: int, keep_full_image: bool = False):
        selection, indices = self._select(num_rays_per_batch)
        c, y, x = indices.unbind(-1)
        pos = self._positions(batch["image_idx"])[c]
        if bool((pos < 0).any()):
            raise RuntimeError(
                "EVOS selected a camera missing from the image batch; "
                "set --pipeline.datamanager.train-num-images-to-sample-from -1"
            )
        collated = {k: v[pos, y, x] for k, v in batch.items() if k != "image_idx" and v is not None}
        return self._finish(collated, selection, indices, batch, keep_full_image)

    def collate_image_dataset_batch_list(self, batch: Dict, num_rays_per_batch: int, keep_full_image: bool = False):
        """Variable resolutions: gather from per-key flat concatenations in the store's camera order,
        so a store flat index addresses the concatenation directly."""
        selection, indices = self._select(num_rays_per_batch)
        flat = selection.flat.cpu()
        order = self._positions(batch["image_idx"])[self.selector.store.cameras.cpu()]
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
        return self._finish(collated, selection, indices, batch, keep_full_image)
