"""Image metrics shared by the image trainer and the NeRF model.

LPIPS needs torchvision's AlexNet weights, which torchmetrics downloads when the metric is
built. These machines are offline, so LPIPS is built only when the weights are already in the
torch hub cache; otherwise it is reported as unavailable (None plus a reason), never faked.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"


def psnr(pred01: Tensor, target01: Tensor) -> float:
    """PSNR in dB of [..., H, W, 3] images in [0, 1] (data range 1)."""
    return float(peak_signal_noise_ratio(pred01.clamp(0, 1), target01, data_range=1.0))


def ssim(pred01: Tensor, target01: Tensor) -> float:
    """Standard SSIM (11x11 Gaussian, sigma 1.5) of [H, W, 3] images in [0, 1]."""
    to_nchw = lambda x: x.clamp(0, 1).permute(2, 0, 1)[None].float()  # noqa: E731
    return float(structural_similarity_index_measure(to_nchw(pred01), to_nchw(target01), data_range=1.0))


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


def build_lpips() -> Tuple[Optional[Callable[[Tensor, Tensor], Tensor]], str]:
    """Return (metric, reason). metric is None when LPIPS cannot be built without a download."""
    weights = alexnet_weights_path()
    if not weights.is_file():
        return None, f"LPIPS unavailable: AlexNet weights not cached at {weights} and downloads are disabled"
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True), "ok"
    except Exception as err:  # a corrupt cache must not crash training
        warnings.warn(f"LPIPS unavailable: {err}")
        return None, f"LPIPS unavailable: {err}"
