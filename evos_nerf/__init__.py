"""evos-nerf: EVOS (CVPR 2025) pixel selection for neural fields."""

__version__ = "0.1.0"
