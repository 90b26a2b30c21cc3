"""Compatibility of nerfstudio 1.1.5 with the torch it runs on here (2.14).

nerfstudio's ExponentialDecayScheduler computes learning rates with numpy, so every nerfacto
checkpoint holds numpy float64 scalars in its optimizer and scheduler state. torch >= 2.6 loads
checkpoints with ``weights_only=True`` by default and refuses those scalars, which breaks
``--load-dir`` resume and ``ns-eval`` for every nerfacto-based method. Allow-listing the numpy
scalar constructor (plain numbers, no code) restores both without turning the safe loader off.
"""

from __future__ import annotations

import numpy as np
import torch


def allow_numpy_scalars_in_checkpoints() -> None:
    allowed = [np.core.multiarray.scalar, np.dtype]
    allowed += [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32")]
    torch.serialization.add_safe_globals(allowed)
