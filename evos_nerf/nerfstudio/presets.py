"""Reduced nerfacto for 2 CPU cores, shared by the demo, the NeRF benchmark and the tests.

nerfacto's defaults (2^19-entry hash tables, 256 + 96 proposal samples, 4096 rays) are sized
for a GPU; on a CPU one step takes many seconds. The reduced setting keeps the architecture and
shrinks the budgets. ``full=True`` keeps nerfacto's sizes (paper scale, for a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evos_nerf.nerfstudio.config import evos_nerf_blender_config
from evos_nerf.nerfstudio.trainer import EvosTrainerConfig


@dataclass
class Budget:
    steps: int = 600
    rays: int = 1024
    full: bool = False
    """Keep nerfacto's full model sizes (for a GPU)."""


def blender_run_config(
    scene: Path, out: Path, budget: Budget, strategy: str = "evos", seed: int = 42, experiment: str = "demo"
) -> EvosTrainerConfig:
    """An evos-nerf-blender config ready for ``train_loop``: tensorboard logging, no viewer."""
    config = evos_nerf_blender_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.data = scene
    config.output_dir = out
    config.experiment_name = experiment
    config.timestamp = strategy
    config.max_num_iterations = budget.steps
    config.steps_per_save = budget.steps
    config.steps_per_eval_batch = budget.steps + 1
    config.steps_per_eval_image = budget.steps + 1
    config.steps_per_eval_all_images = budget.steps + 1
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.machine.seed = seed
    config.logging.steps_per_log = max(1, budget.steps // 10)
    dm = config.pipeline.datamanager
    dm.train_num_rays_per_batch = budget.rays
    dm.eval_num_rays_per_batch = budget.rays
    dm.pixel_sampler.strategy = strategy  # type: ignore[assignment]
    if not budget.full:
        model = config.pipeline.model
        model.num_nerf_samples_per_ray = 32
        model.num_proposal_samples_per_ray = (64, 32)
        model.log2_hashmap_size = 15
        model.max_res = 512
        model.hidden_dim = 32
        model.hidden_dim_color = 32
        model.eval_num_rays_per_chunk = 4096
    return config
