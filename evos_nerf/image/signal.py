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
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from evos_nerf.core.laplacian import laplacian_of_rgb
from evos_nerf.errors import UserInputError

SKIMAGE_PREFIX = "skimage:"
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


def _from_array(name: str, array: np.ndarray, note: List[str]) -> np.ndarray:
    """Any PIL/skimage array -> float32 [H, W, 3] in [0, 1]."""
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = array.astype(np.float32)
        if data.max() > 1.0:
            data = data / 255.0
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        data = array.astype(np.float32)
        peak = float(data.max())
        data = data / (peak if peak > 1 else 1.0)
    else:
        raise UserInputError(f"{name}: unsupported pixel type {array.dtype}")
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=-1)
        note.append("grayscale expanded to RGB")
    elif data.ndim == 3 and data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
        note.append("grayscale expanded to RGB")
    elif data.ndim == 3 and data.shape[-1] == 2:
        gray, alpha = data[..., :1], data[..., 1:]
        data = np.repeat(gray * alpha + (1.0 - alpha), 3, axis=-1)
        note.append("gray+alpha composited on white")
    elif data.ndim == 3 and data.shape[-1] == 4:
        rgb, alpha = data[..., :3], data[..., 3:]
        data = rgb * alpha + (1.0 - alpha)
        note.append("RGBA composited on white")
    elif not (data.ndim == 3 and data.shape[-1] == 3):
        raise UserInputError(f"{name}: expected an image with 1-4 channels, got an array of shape {array.shape}")
    if not np.isfinite(data).all():
        raise UserInputError(f"{name}: image contains NaN or infinite values")
    return np.clip(data, 0.0, 1.0)


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


def _read_file(path: Path) -> np.ndarray:
    if not path.exists():
        raise UserInputError(f"image not found: {path}")
    if path.is_dir():
        raise UserInputError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            return np.asarray(img)
    except UnidentifiedImageError:
        raise UserInputError(f"cannot read {path}: not an image file or an unsupported format") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"cannot read {path}: corrupt or truncated image ({err})") from None


def _read_skimage(source: str) -> np.ndarray:
    import skimage.data

    name = source[len(SKIMAGE_PREFIX) :]
    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise UserInputError(f"unknown skimage image {name!r} (try skimage:astronaut)")
    return np.asarray(loader())


def load_image(source: str | Path, resolution: Optional[int] = None) -> ImageSignal:
    """Load an image file, or ``skimage:NAME`` from scikit-image's bundled data, as a signal."""
    source_str = str(source)
    note: List[str] = []
    if source_str.startswith(SKIMAGE_PREFIX):
        array, name = _read_skimage(source_str), source_str[len(SKIMAGE_PREFIX) :]
    else:
        path = Path(source_str)
        array, name = _read_file(path), path.stem
    data = _resize(_from_array(name, array, note), resolution, note)
    if min(data.shape[:2]) < 4:
        raise UserInputError(f"{name}: image is too small ({data.shape[1]}x{data.shape[0]}), need at least 4x4")
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

