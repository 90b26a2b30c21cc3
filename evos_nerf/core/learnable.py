"""Learnable error: the part of a pixel's cached error that training is still taking away.

Real captures carry error no sampler can train away (exposure, motion blur, pose noise), and
every error-ranked sampler is drawn to it. Per pixel the two parts cannot be told apart at NeRF
budgets: a 1200-step run of 512 rays measures a fern pixel about 0.2 times, so no pixel has an
error trajectory of its own. An image does, and the image is the unit of exposure, blur and pose
error: its pixels were measured at different points of the run while the training-wide error
level fell.

The model, per image: a pixel measured when the error level was ``x`` times today's level had
error ``e = a + c * x``. ``c * x`` is the part that falls with training (learnable), ``a`` the
image's persistent floor, and ``(e - a)+ / x`` a pixel's learnable error today. ``a`` and ``c``
are a least-squares fit over the image's *uniformly drawn* measurements only (uniform phases and
the probes of each key iteration), kept as per-epoch sums so that later measurements never erase
them: EVOS measures a pixel when it selects it, so its other measurements are its hardest pixels
at their latest, and fitting those would read "error does not fall" into every image EVOS works
on. Images with too few uniform measurements, or too little spread in ``x``, keep ``a = 0``: all
error learnable, the plain EVOS fitness.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_SAMPLES = 8
"""Uniformly drawn measurements an image needs before its floor is estimated."""
MIN_SPREAD = 0.05
"""Minimum variance of the level ratio x among those measurements (x spans 1 to ~10 in a run)."""


def fit_floors(counts: Tensor, sums: Tensor, level_ratio: Tensor) -> Tensor:
    """[N] persistent error floor ``a`` of each image (0 where it cannot be estimated).

    ``counts`` and ``sums`` [N, E]: number and error total of each image's uniformly drawn
    measurements per epoch; ``level_ratio`` [E]: x of each epoch, its error level over today's (>= 1).
    """
    x = level_ratio.to(counts).reshape(1, -1)
    n = counts.sum(1)
    safe_n = n.clamp(min=1.0)
    mean_x = (counts * x).sum(1) / safe_n
    mean_e = sums.sum(1) / safe_n
    var_x = (counts * x * x).sum(1) / safe_n - mean_x * mean_x
    cov = (sums * x).sum(1) / safe_n - mean_e * mean_x
    estimable = (n >= MIN_SAMPLES) & (var_x >= MIN_SPREAD)
    # c in [0, mean_e / mean_x]: error never rises with training progress, and the floor stays >= 0.
    slope = torch.minimum((cov / var_x.clamp(min=1e-12)).clamp(min=0.0), mean_e / mean_x.clamp(min=1e-12))
    return torch.where(estimable, (mean_e - slope * mean_x).clamp(min=0.0), torch.zeros_like(mean_e))


def learnable_error(error: Tensor, level_ratio: Tensor, floor: float) -> Tensor:
    """(e - a)+ / x for one image's pixels: learnable error today (0 where unmeasured, as e is)."""
    return (error.float() - floor).clamp_(min=0.0).div_(level_ratio.float().clamp(min=1e-12))
