"""Which hash-grid implementation to run: tiny-cuda-nn on CUDA when it imports, pure torch otherwise.

nerfstudio falls back to torch only when tinycudann is *missing*; an installed tinycudann on a
CPU run would still be picked and fail. This check looks at the device too. Tests mock
``tcnn_available`` to exercise the CUDA branch on CPU.
"""

from __future__ import annotations

from typing import Literal

import torch

Implementation = Literal["tcnn", "torch"]


def tcnn_available() -> bool:
    from nerfstudio.utils.external import TCNN_EXISTS

    return bool(TCNN_EXISTS)


def choose_implementation(device: torch.device | str, requested: str = "auto") -> Implementation:
    """'auto' -> tcnn iff the device is CUDA and tinycudann imports; explicit choices are checked."""
    device = torch.device(device)
    if requested == "torch":
        return "torch"
    on_cuda = device.type == "cuda"
    if requested == "tcnn":
        if not on_cuda:
            raise ValueError(f"implementation 'tcnn' needs a CUDA device, got {device}")
        if not tcnn_available():
            raise ValueError("implementation 'tcnn' requested but tinycudann is not importable")
        return "tcnn"
    if requested != "auto":
        raise ValueError(f"implementation must be auto, tcnn or torch, got {requested!r}")
    return "tcnn" if on_cuda and tcnn_available() else "torch"
