"""High-frequency fitness and cross-frequency supervision (EVOS §2.4 step 2 and §2.6).

Everything is computed in the paper's units: grayscale of the image decoded to [0, 255], a
3x3 five-point Laplacian with zero padding, scaled by lambda = 1e-5. Those units fix the
adaptive crossover balance p, so they are not a free choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import rgb_to_grayscale

DEFAULT_LAMBDA = 1e-5

_KERNEL = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(gray: Tensor) -> Tensor:
    """Five-point Laplacian of a [H, W] image, zero-padded so borders see black neighbours."""
    kernel = _KERNEL.to(device=gray.device, dtype=gray.dtype).view(1, 1, 3, 3)
    return F.conv2d(gray[None, None], kernel, padding=1)[0, 0]


def gray_255(rgb01: Tensor) -> Tensor:
    """[H, W, 3] image in [0, 1] -> [H, W] grayscale in [0, 255], clamped like the decoder.

    Clamping zeroes the gradient of out-of-range predictions, as in the reference.
    """
    rgb255 = rgb01.clamp(0.0, 1.0) * 255.0
    return rgb_to_grayscale(rgb255.permute(2, 0, 1))[0]


def laplacian_of_rgb(rgb01: Tensor) -> Tensor:
    """Laplacian of the 0-255 grayscale of an [H, W, 3] image in [0, 1]."""
    return laplacian(gray_255(rgb01))


_GRAY = torch.tensor([0.2989, 0.587, 0.114])
"""torchvision's rgb_to_grayscale weights."""


def laplacian_squared(rgb: Tensor) -> Tensor:
    """[H, W] squared Laplacian of the [0, 1] grayscale of an [H, W, 3+] image (float in [0, 1] or uint8).

    Equals ``(laplacian_of_rgb(rgb) / 255) ** 2`` up to float rounding, computed with a matrix-vector
    grayscale and four shifted adds: on one CPU thread this is about 20x faster than conv2d, which
    matters because the ray path derives its edge prior from the images at every key iteration.
    """
    h, w = rgb.shape[:2]
    if rgb.dtype == torch.uint8:
        pixels, weights = rgb[..., :3].reshape(-1, 3).float(), _GRAY / 255.0
    else:
        pixels, weights = rgb[..., :3].float().clamp(0.0, 1.0).reshape(-1, 3), _GRAY
    gray = torch.mv(pixels, weights.to(pixels.device)).view(h, w)
    lap = gray * -4.0  # five-point stencil, zero padding: border pixels see black neighbours
    lap[1:] += gray[:-1]
    lap[:-1] += gray[1:]
    lap[:, 1:] += gray[:, :-1]
    lap[:, :-1] += gray[:, 1:]
    return lap.square_()


def laplacian_fitness(pred01: Tensor, target_laplacian: Tensor, lam: float = DEFAULT_LAMBDA) -> Tensor:
    """Per-pixel high-frequency error l = lambda * (Lap(pred) - Lap(gt))^2, shape [H, W]."""
    return lam * (laplacian_of_rgb(pred01) - target_laplacian) ** 2


# -- CFS at selected pixels (EVOS §2.6 on non-key iterations) ------------------------------------
# The official code scatters the fresh predictions into the last full prediction (a pseudo-full
# RGB image), decodes it, converts it to grayscale, convolves it and keeps the Laplacian at the
# selected pixels. Grayscale is per pixel, so the stale pixels' grayscale can be kept from the last
# full prediction and only the selected pixels' recomputed: the pseudo-full image shrinks to one
# zero-bordered grayscale plane, whose stencil is four shifted adds.

_GRAY_R, _GRAY_G, _GRAY_B = 0.2989, 0.587, 0.114


def gray_255_rows(rgb01: Tensor) -> Tensor:
    """[K, 3] pixels in [0, 1] -> [K] grayscale in [0, 255], per pixel exactly as ``gray_255``.

    Same clamp, scale and torchvision weights in the same order, so a pixel gets the same float.
    """
    rgb255 = rgb01.clamp(0.0, 1.0) * 255.0
    return _GRAY_R * rgb255[:, 0] + _GRAY_G * rgb255[:, 1] + _GRAY_B * rgb255[:, 2]


def bordered(plane: Tensor) -> Tensor:
    """[H, W] -> [H + 2, W + 2] copy with a zero border: the stencil's zero padding."""
    return F.pad(plane, (1, 1, 1, 1))


def bordered_index(indices: Tensor, width: int) -> Tensor:
    """Row-major pixel indices of an [H, W] image -> flat indices into its ``bordered`` plane."""
    return indices + (indices // width) * 2 + (width + 3)


def laplacian_of_bordered(plane: Tensor) -> Tensor:
    """Five-point Laplacian [H, W] of a ``bordered`` [H + 2, W + 2] plane.

    Equals ``laplacian`` of the plane's interior up to float summation order.
    """
    inner = plane[1:-1, 1:-1]
    return plane[:-2, 1:-1] + plane[2:, 1:-1] + plane[1:-1, :-2] + plane[1:-1, 2:] - 4.0 * inner
