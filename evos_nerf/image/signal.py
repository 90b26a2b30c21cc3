"""An image as an INR training signal: coordinates, encoded targets and the way back to pixels.

Targets use the reference's ``min_max`` encoding (global min/max to [0, 1], then to [-1, 1]),
because the L2 fitness and therefore the crossover balance p are defined in those units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.errors import UserInputError
from evos_nerf.image.imread import SKIMAGE_PREFIX, read_file, read_skimage, to_unit_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageSignal:
    name: str
    rgb: Tensor
    """[H, W, 3] float32 in [0, 1]: the ground truth the metrics use."""
    lo: float
    hi: float
    note: str = ""
    """What loading changed (grayscale expanded, alpha composited, resized), for the user."""

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def num_samples(self) -> int:
        return self.height * self.width

    def coords(self) -> Tensor:
        """[N, 2] coordinates in [-1, 1], (y, x) order, row-major like the pixels."""
        ys = torch.linspace(-1.0, 1.0, self.height)
        xs = torch.linspace(-1.0, 1.0, self.width)
        return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)

    def targets(self) -> Tensor:
        """[N, 3] targets in the [-1, 1] min_max encoding."""
        scale = max(self.hi - self.lo, 1e-8)
        return ((self.rgb.reshape(-1, 3) - self.lo) / scale - 0.5) * 2.0

    def decode(self, values: Tensor) -> Tensor:
        """Network outputs in the [-1, 1] encoding -> [0, 1] pixels (unclamped)."""
        return (values / 2.0 + 0.5) * (self.hi - self.lo) + self.lo

    def target_laplacian(self) -> Tensor:
        return laplacian_of_rgb(self.rgb)

    def to(self, device: torch.device) -> "ImageSignal":
        return ImageSignal(self.name, self.rgb.to(device), self.lo, self.hi, self.note)


def _resize(data: np.ndarray, resolution: Optional[int], note: List[str]) -> np.ndarray:
    """Resize so the longer side is ``resolution`` (Lanczos), keeping the aspect ratio."""
    if resolution is None:
        return data
    if resolution < 8:
        raise UserInputError(f"resolution must be at least 8 pixels, got {resolution}")
    h, w = data.shape[:2]
    if max(h, w) == resolution:
        return data
    scale = resolution / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [
        np.asarray(Image.fromarray(data[..., c].astype(np.float32), mode="F").resize(size, Image.LANCZOS))
        for c in range(3)
    ]
    note.append(f"resized {w}x{h} -> {size[0]}x{size[1]}")
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def load_image(source: str | Path, resolution: Optional[int] = None, name: Optional[str] = None) -> ImageSignal:
    """Load an image file, or ``skimage:NAME`` from scikit-image's bundled data, as a signal.

    ``name`` (default: the file's stem or NAME) is what results are filed under; the CLI passes a
    unique one when two files in a folder share a stem.
    """
    source_str = str(source)
    note: List[str] = []
    if source_str.startswith(SKIMAGE_PREFIX):
        array, default_name = read_skimage(source_str)
    else:
        path = Path(source_str)
        array, default_name = read_file(path, note), path.stem
    data = _resize(to_unit_rgb(source_str, array, note), resolution, note)
    name = name or default_name
    if min(data.shape[:2]) < 4:
        raise UserInputError(f"{source_str}: image is too small ({data.shape[1]}x{data.shape[0]}), need at least 4x4")
    rgb = torch.from_numpy(np.ascontiguousarray(data)).float()
    return ImageSignal(name, rgb, float(rgb.min()), float(rgb.max()), "; ".join(note))


def list_images(source: str | Path) -> List[str]:
    """Expand a directory to its image files (sorted); pass files and skimage: names through."""
    source_str = str(source)
    if source_str.startswith(SKIMAGE_PREFIX):
        return [source_str]
    path = Path(source_str)
    if not path.exists():
        raise UserInputError(f"image or directory not found: {path}")
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in directory {path}")
        return files
    return [source_str]

