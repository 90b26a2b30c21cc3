"""Reduced nerfacto for 2 CPU cores, shared by the demo, the NeRF benchmark and the tests.

nerfacto's defaults (2^19-entry hash tables, 256 + 96 proposal samples, 4096 rays) are sized
for a GPU; on a CPU one step takes many seconds. The reduced setting keeps the architecture and
shrinks the budgets. ``full=True`` keeps nerfacto's sizes (paper scale, for a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal

from evos_nerf.nerfstudio.config import evos_nerf_blender_config, evos_nerf_config
from evos_nerf.nerfstudio.trainer import EvosTrainerConfig

SceneFormat = Literal["blender", "nerfstudio"]


@dataclass
class Budget:
    steps: int = 600
    rays: int = 1024
    full: bool = False
    """Keep nerfacto's full model sizes (for a GPU)."""
    decay_to_budget: bool = False
    """Let nerfacto's exponential learning-rate decay (1e-2 -> 1e-4) end at ``steps`` instead of at
    step 200000, so a short run converges: the convergence benchmark uses this."""
    model: Dict[str, Any] = field(default_factory=dict)
    """Overrides of the (reduced) model config, e.g. ``{"num_nerf_samples_per_ray": 24}`` or
    ``{"camera_optimizer.mode": "off"}``."""


def run_config(
    scene: Path,
    out: Path,
    budget: Budget,
    strategy: str = "evos",
    seed: int = 42,
    experiment: str = "demo",
    scene_format: SceneFormat = "blender",
    downscale: int = 1,
) -> EvosTrainerConfig:
    """An evos-nerf(-blender) config ready for ``train_loop``: tensorboard logging, no viewer.

    Real captures (``nerfstudio``) keep nerfacto's real-scene behaviour (scene contraction,
    camera optimizer, appearance embeddings) and hold out every 8th frame (the LLFF convention);
    ``downscale`` 2 reads their ``images_2/``.
    """
    if scene_format == "blender":
        config = evos_nerf_blender_config()
    else:
        config = evos_nerf_config()
        parser = config.pipeline.datamanager.dataparser
        parser.downscale_factor = downscale
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
    if budget.decay_to_budget:
        for group in ("fields", "proposal_networks"):
            config.optimizers[group]["scheduler"].max_steps = budget.steps
    if not budget.full:
        model = config.pipeline.model
        model.num_nerf_samples_per_ray = 32
        model.num_proposal_samples_per_ray = (64, 32)
        model.log2_hashmap_size = 15
        model.max_res = 512
        model.hidden_dim = 32
        model.hidden_dim_color = 32
        model.eval_num_rays_per_chunk = 4096
    for key, value in budget.model.items():  # dotted keys reach nested configs: camera_optimizer.mode
        *path, name = key.split(".")
        target = config.pipeline.model
        for part in path:
            target = getattr(target, part)
        if not hasattr(target, name):
            raise ValueError(f"unknown model setting {key!r} in the budget")
        setattr(target, name, tuple(value) if isinstance(value, list) else value)
    return config


def blender_run_config(
    scene: Path, out: Path, budget: Budget, strategy: str = "evos", seed: int = 42, experiment: str = "demo"
) -> EvosTrainerConfig:
    return run_config(scene, out, budget, strategy, seed, experiment, "blender")
