"""Coordinate networks for image fitting: SIREN (the paper's backbone), a nerfstudio hash grid, PE-MLP."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from evos_nerf.image.compiled import CompileMode
from evos_nerf.implementation import choose_implementation

BackboneKind = Literal["siren", "hashgrid", "pemlp"]

# Learning rates of the official EVOS code per backbone (manager._get_lr_by_model); hash grids
# use the instant-NGP convention.
DEFAULT_LR = {"siren": 1e-4, "pemlp": 1e-3, "hashgrid": 1e-2}


@dataclass
class BackboneConfig:
    kind: BackboneKind = "siren"
    width: int = 256
    """Hidden width (SIREN / PE-MLP) or MLP width after the hash grid."""
    depth: int = 5
    """Number of linear layers (SIREN: 5 = first + 3 hidden + output)."""
    omega0: float = 30.0
    lr: Optional[float] = None
    """Adam learning rate; None uses the backbone's default (SIREN 1e-4, constant)."""
    num_levels: int = 16
    log2_hashmap_size: int = 16
    features_per_level: int = 2
    implementation: Literal["auto", "tcnn", "torch"] = "auto"
    """Hash-grid implementation: auto = tcnn on CUDA when importable, torch otherwise."""
    compile: CompileMode = "auto"
    """torch.compile the training forward/backward: auto = for SIREN runs on the CPU with at least
    5e7 pixel-iterations (where the ~20% faster steps repay the compile), on = always, off = never."""

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.kind]


class _CoordinateLinear(torch.autograd.Function):
    """x W^T + b for inputs with very few columns (pixel coordinates), with a faster weight gradient.

    Autograd computes that gradient as g^T x, a [width, batch] x [batch, 2] product that MKL runs
    about 3x slower on one CPU thread than the same numbers as (x^T g)^T (11 vs 4 ms at 32768
    pixels, width 128: ~3% of a SIREN step). Values are those of ``F.linear`` up to summation order.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        return grad_x, x.t().mm(grad).t(), grad.sum(0)


class SineLayer(nn.Module):
    """sin(omega0 * (W x + b)) with SIREN's initialisation (Sitzmann et al., NeurIPS 2020)."""

    def __init__(self, in_dim: int, out_dim: int, omega0: float, first: bool) -> None:
        super().__init__()
        self.omega0 = omega0
        self.thin_input = in_dim <= 4
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / omega0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.thin_input and x.dim() == 2:
            return torch.sin(self.omega0 * _CoordinateLinear.apply(x, self.linear.weight, self.linear.bias))
        return torch.sin(self.omega0 * self.linear(x))


class Siren(nn.Module):
    """SIREN as in the EVOS code: first sine layer, (depth - 2) hidden sine layers, linear output."""

    def __init__(self, width: int = 256, depth: int = 5, omega0: float = 30.0, in_dim: int = 2, out_dim: int = 3):
        super().__init__()
        if depth < 2:
            raise ValueError(f"SIREN depth must be >= 2 linear layers, got {depth}")
        layers = [SineLayer(in_dim, width, omega0, first=True)]
        layers += [SineLayer(width, width, omega0, first=False) for _ in range(depth - 2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_dim)
        bound = math.sqrt(6.0 / width) / omega0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def forward(self, coords: Tensor) -> Tensor:
        return self.head(self.body(coords))


class HashGridImage(nn.Module):
    """nerfstudio's HashEncoding + MLP fitted to an image.

    HashEncoding is 3-D, so pixels sit on the z = 0 plane of the grid: trilinear weights on the
    other plane are exactly zero and the encoding reduces to a 2-D multiresolution hash grid.
    """

    def __init__(self, config: BackboneConfig, resolution: int, implementation: str):
        super().__init__()
        from nerfstudio.field_components.encodings import HashEncoding
        from nerfstudio.field_components.mlp import MLP

        self.implementation = implementation
        self.encoding = HashEncoding(
            num_levels=config.num_levels,
            min_res=min(16, resolution),
            max_res=max(resolution, 16),
            log2_hashmap_size=config.log2_hashmap_size,
            features_per_level=config.features_per_level,
            implementation=implementation,
        )
        self.mlp = MLP(
            in_dim=self.encoding.get_out_dim(),
            num_layers=max(1, config.depth - 3),
            layer_width=config.width,
            out_dim=3,
            activation=nn.ReLU(),
            out_activation=None,
            implementation=implementation,
        )

    def forward(self, coords: Tensor) -> Tensor:
        unit = (coords + 1.0) / 2.0
        xyz = torch.cat([unit, torch.zeros_like(unit[:, :1])], dim=-1)
        return self.mlp(self.encoding(xyz)).float()


class PEMLP(nn.Module):
    """ReLU MLP on a 10-frequency positional encoding (nerfstudio NeRFEncoding + MLP)."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        from nerfstudio.field_components.encodings import NeRFEncoding
        from nerfstudio.field_components.mlp import MLP

        self.encoding = NeRFEncoding(
            in_dim=2, num_frequencies=10, min_freq_exp=0.0, max_freq_exp=9.0, include_input=True
        )
        self.mlp = MLP(
            in_dim=self.encoding.get_out_dim(),
            num_layers=config.depth,
            layer_width=config.width,
            out_dim=3,
            activation=nn.ReLU(),
            out_activation=None,
            implementation="torch",
        )

    def forward(self, coords: Tensor) -> Tensor:
        return self.mlp(self.encoding(coords))


def build_backbone(config: BackboneConfig, resolution: int, device: torch.device) -> tuple[nn.Module, str]:
    """Build the network on ``device``; returns (module, implementation actually used)."""
    if config.kind == "siren":
        return Siren(config.width, config.depth, config.omega0).to(device), "torch"
    if config.kind == "pemlp":
        return PEMLP(config).to(device), "torch"
    if config.kind == "hashgrid":
        implementation = choose_implementation(device, config.implementation)
        return HashGridImage(config, resolution, implementation).to(device), implementation
    raise ValueError(f"unknown backbone {config.kind!r}")
