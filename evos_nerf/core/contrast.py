"""SSIM's sensitivity map: where a unit of squared error costs the most structural similarity.

Why a second crossover prior. EVOS ranks pixels by squared error, which is what PSNR measures; SSIM
weighs the same error very differently. For a local window with ground-truth variance s^2 and an
error of variance n^2 that is independent of the image, SSIM's contrast-structure term is
(2 s^2 + C2) / (2 s^2 + n^2 + C2), so the SSIM lost there is about n^2 / (2 s^2 + C2): a unit of
squared error in a flat region (s^2 near 0) costs up to 1 + 2 s^2 / C2 times what it costs on a
texture. Error-ranked samplers spend their batch on textured, high-error pixels and leave flat
regions slightly noisy, which is where real captures lose SSIM (benchmarks/README.md, "Findings in
full"). Weighting a pixel's error by 1 / (2 s^2 + C2) ranks it by the SSIM it costs; crossing that
parent with the plain error (PSNR's) is the frequency-guided crossover with a prior that points the
other way.

The window and constants are the standard SSIM's (Wang et al. 2004; torchmetrics, which nerfstudio's
evaluation uses): an 11x11 Gaussian of sigma 1.5, C2 = (0.03 * data range)^2, images in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C2 = 0.03**2
WINDOW = 11
SIGMA = 1.5


def _gaussian(device: torch.device) -> Tensor:
    x = torch.arange(WINDOW, dtype=torch.float32, device=device) - (WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    return g / g.sum()


def _blur(planes: Tensor) -> Tensor:
    """Separable SSIM window over [C, H, W] planes, reflect-padded (as torchmetrics pads)."""
    c = planes.shape[0]
    g = _gaussian(planes.device)
    pad = WINDOW // 2
    x = F.pad(planes[None], (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, WINDOW), groups=c)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, WINDOW, 1), groups=c)
    return x[0]


def ssim_sensitivity(rgb: Tensor) -> Tensor:
    """[H, W] float32: mean over colour channels of 1 / (2 s^2 + C2), s^2 the local variance of the
    ground truth in SSIM's window. ``rgb`` is [H, W, 3+] in [0, 1] (float) or uint8."""
    planes = rgb[..., :3].permute(2, 0, 1).float()
    if rgb.dtype == torch.uint8:
        planes = planes / 255.0
    else:
        planes = planes.clamp(0.0, 1.0)
    if min(planes.shape[1:]) <= WINDOW // 2:  # reflect padding needs more pixels than the half-window
        variance = planes.var(dim=(1, 2), correction=0, keepdim=True).expand_as(planes)
    else:
        mean = _blur(planes)
        variance = (_blur(planes * planes) - mean * mean).clamp_(min=0.0)
    return (1.0 / (2.0 * variance + SSIM_C2)).mean(dim=0)
