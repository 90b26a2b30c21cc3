"""Pipeline that closes the EVOS loop: the selector picks rays, the model's per-ray errors go back.

``VanillaPipeline.get_train_loss_dict`` does not return the batch, so its four lines are
re-stated here around the selector's verbs. DDP wraps the model with ``device_ids=None`` on CPU,
where upstream's ``device_ids=[local_rank]`` raises.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Type

import torch
import torch.distributed as dist
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from torch import Tensor
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel as DDP

from evos_nerf.errors import NonFiniteLossError
from evos_nerf.nerfstudio.datamanager import EvosDataManager, EvosDataManagerConfig
from evos_nerf.nerfstudio.evos_logging import inspection_callbacks
from evos_nerf.nerfstudio.inspection import EvosInspectionConfig
from evos_nerf.nerfstudio.model import EvosNerfactoModel, EvosNerfactoModelConfig, proposal_schedule_kept
from evos_nerf.nerfstudio.viewer import build_panel


@dataclass
class EvosPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: EvosPipeline)
    datamanager: EvosDataManagerConfig = field(default_factory=EvosDataManagerConfig)
    model: EvosNerfactoModelConfig = field(default_factory=EvosNerfactoModelConfig)
    inspection: EvosInspectionConfig = field(default_factory=EvosInspectionConfig)
    """The viewer's EVOS panel and the EVOS images logged to tensorboard / wandb."""


def check_finite_losses(loss_dict: Dict[str, Tensor], step: int) -> None:
    """Stop before a NaN or infinite loss reaches the weights (and, through them, a checkpoint).

    One small device-to-host copy per step, paid by every strategy alike: on a GPU the only host
    read of the step's sampling and loss (the selector's draw and write-back make none).
    """
    values = torch.stack([v.detach().float().sum() for v in loss_dict.values()])
    if bool(torch.isfinite(values).all()):
        return
    terms = ", ".join(f"{name} = {float(v):.4g}" for name, v in zip(loss_dict, values.tolist()))
    raise NonFiniteLossError(
        f"training loss is not finite at step {step} ({terms}): training stopped before the update; "
        "try a lower learning rate (--optimizers.fields.optimizer.lr) or check the data"
    )


class EvosPipeline(VanillaPipeline):
    config: EvosPipelineConfig
    datamanager: EvosDataManager

    def __init__(
        self,
        config: EvosPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ):
        # Build unwrapped, then wrap with a device-aware DDP below.
        super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        self.world_size = world_size
        if world_size > 1:
            on_cuda = torch.device(device).type == "cuda"
            if on_cuda:
                # nerfstudio's own launcher (--machine.num-devices N) never sets the current device;
                # EVOS's NCCL collectives use it, so pin it to this rank's GPU.
                torch.cuda.set_device(torch.device(device))
            ids = [local_rank] if on_cuda else None
            self._model = typing.cast(Model, DDP(self._model, device_ids=ids, find_unused_parameters=True))
            dist.barrier(device_ids=ids) if on_cuda else dist.barrier()
        # The viewer's EVOS panel: nerfstudio's viewer finds its elements by walking the pipeline's
        # attributes and names the folder after this one (None when disabled or for inference).
        self.EVOS = build_panel(self.datamanager, config.inspection)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """nerfstudio's callbacks, plus the EVOS panel's refresh and the EVOS image logging."""
        callbacks = super().get_training_callbacks(training_callback_attributes)
        return callbacks + inspection_callbacks(self, training_callback_attributes)

    @property
    def evos_model(self) -> EvosNerfactoModel:
        return typing.cast(EvosNerfactoModel, self.model)

    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        selector = self.datamanager.selector
        selector.maybe_evolve(step, self.measure_errors)
        ray_bundle, batch = self.datamanager.next_train(step)
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict, ray_errors = self.evos_model.training_losses(model_outputs, batch, metrics_dict)
        check_finite_losses(loss_dict, step)
        points = None
        if selector.wants_points:  # where each ray ends: the crossview prior projects its error from there
            points = ray_bundle.origins + ray_bundle.directions * model_outputs["depth"].detach()
        selector.observe(batch["evos_flat"], ray_errors, step, uniform=batch.get("evos_uniform"), points=points)
        return model_outputs, loss_dict, metrics_dict

    @torch.no_grad()
    def measure_errors(self, indices: Tensor) -> Tensor:
        """Per-ray errors of training pixels, in training mode but without gradients or side effects."""
        model = self.evos_model
        chunk = model.config.eval_num_rays_per_chunk
        errors = []
        with proposal_schedule_kept(model.proposal_sampler):
            for start in range(0, indices.shape[0], chunk):
                part = indices[start : start + chunk]
                outputs = model(self.datamanager.train_ray_generator(part))
                errors.append(model.ray_error(outputs, self.datamanager.gather_train_pixels(part)))
        return torch.cat(errors)
