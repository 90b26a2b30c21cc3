"""Nerfacto with the changes EVOS needs: per-ray errors, an implementation chosen per device,
LPIPS that never downloads, and renders that leave training alone.

* ``training_losses`` returns the per-ray squared errors of the very (prediction, ground truth)
  pair the RGB loss averages, after nerfacto's background blending, and weights that loss by the
  selector's per-ray weights when it gives any.
* ``implementation="auto"`` resolves to tcnn only on CUDA with tinycudann importable. The choice
  is stored in the checkpoint; loading it into the other implementation is a clear error,
  because tcnn and torch hash grids have different parameters.
* LPIPS is built only from locally cached AlexNet weights; otherwise it is reported unavailable
  and left out of the metrics rather than faked.
* Rendering in eval mode (evaluation, the viewer, ``ns-render``) keeps the proposal sampler's update
  schedule, which nerfacto's own forward pass resets whenever an update is due.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Literal, Optional, Tuple, Type
from unittest import mock

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.model_components.ray_samplers import ProposalNetworkSampler
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn

from evos_nerf.implementation import choose_implementation
from evos_nerf.metrics import build_lpips


def squared_error(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-ray mean over channels of the squared RGB error."""
    return ((pred - gt) ** 2).mean(dim=-1)


@contextmanager
def proposal_schedule_kept(sampler: ProposalNetworkSampler) -> Iterator[None]:
    """Forward passes in here leave the proposal networks' update schedule as training left it.

    nerfacto gives its proposal networks gradients only every few steps: a counter that the training
    callback advances, and that any forward pass due an update resets. A render between two training
    steps (an evaluation, the viewer) would take that update, so the next training step skipped it:
    a run then depended on when it was evaluated or watched (lego_100 seed 12 moved by 0.0004 dB, and
    EVOS's pixel ranking amplifies such changes)."""
    saved = (sampler._step, sampler._steps_since_update)
    try:
        yield
    finally:
        sampler._step, sampler._steps_since_update = saved


class _UnavailableLPIPS(nn.Module):
    def forward(self, *_: Any) -> Tensor:
        return torch.tensor(float("nan"))


@dataclass
class EvosNerfactoModelConfig(NerfactoModelConfig):
    _target: Type = field(default_factory=lambda: EvosNerfactoModel)
    implementation: Literal["auto", "tcnn", "torch"] = "auto"  # type: ignore[assignment]
    """auto: tcnn on CUDA when tinycudann imports, torch otherwise."""


class EvosNerfactoModel(NerfactoModel):
    config: EvosNerfactoModelConfig

    def populate_modules(self) -> None:
        device = self.kwargs.get("device", "cpu")
        self.config.implementation = choose_implementation(device, self.config.implementation)
        CONSOLE.print(f"evos-nerf: hash-grid implementation {self.config.implementation} on {device}")
        lpips, self.lpips_note = build_lpips()
        self.lpips_available = lpips is not None
        if not self.lpips_available:
            CONSOLE.print(f"[yellow]{self.lpips_note}; LPIPS is left out of the metrics[/yellow]")
        factory = (lambda **_: lpips) if lpips is not None else (lambda **_: _UnavailableLPIPS())
        with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", factory):
            super().populate_modules()

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Any]:
        if self.training:  # a training step (or a re-measurement, which keeps the schedule itself)
            return super().get_outputs(ray_bundle)
        with proposal_schedule_kept(self.proposal_sampler):
            return super().get_outputs(ray_bundle)

    def training_losses(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], metrics_dict: Optional[Dict] = None
    ) -> Tuple[Dict[str, Tensor], Tensor]:
        """(nerfacto's loss dict, per-ray squared errors [R]) for a training batch.

        The RGB term is the mean of the per-ray errors of the very (prediction, ground truth) pair
        blended here, weighted by ``batch["ray_weights"]`` when the selector gives weights (soft
        mining, importance-weighted EVOS), so the fitness fed back is exactly what the loss saw.
        """
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=batch["image"].to(self.device)
        )
        per_ray = squared_error(pred_rgb, gt_rgb)
        weights = batch.get("ray_weights")
        loss_dict["rgb_loss"] = per_ray.mean() if weights is None else (per_ray * weights.to(per_ray)).mean()
        return loss_dict, per_ray.detach().float()

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return self.training_losses(outputs, batch, metrics_dict)[0]

    def ray_error(self, outputs: Dict[str, Tensor], gt_image: Tensor) -> Tensor:
        """Per-ray error of a measurement pass, blended exactly as the training loss blends."""
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=gt_image.to(self.device)
        )
        return squared_error(pred_rgb, gt_rgb).float()

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if not self.lpips_available:
            metrics.pop("lpips", None)
        return metrics, images

    def get_extra_state(self) -> Dict[str, Any]:
        return {"implementation": self.config.implementation}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        saved = state.get("implementation")
        if saved is not None and saved != self.config.implementation:
            raise ValueError(
                f"checkpoint was trained with the {saved} hash grid but this run uses {self.config.implementation}; "
                f"their parameters differ. Pass --pipeline.model.implementation {saved} (tcnn needs CUDA)."
            )
