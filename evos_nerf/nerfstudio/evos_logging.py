"""EVOS images for tensorboard / wandb / comet, and the training callbacks of the inspection tools.

Every ``steps_per_log_images`` steps: the fitness map and the selection-count map of a few
evenly spaced training cameras, plus the fitness histogram of the last key iteration, through
nerfstudio's ``writer.put_image`` (so they land wherever ``--vis`` sends the scalars). Nothing is
computed when no image-capable writer is enabled, or off rank 0 (the writer drops it there).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, List, Optional

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils import comms, writer

from evos_nerf.heatmaps import histogram_image
from evos_nerf.nerfstudio.inspection import EvosInspectionConfig, camera_heatmaps, evenly_spaced

POOL_SAMPLE = 65536
"""Pool members whose mean fitness is logged at each key iteration (listing all would cost a pass)."""


def reset_writers() -> None:
    """nerfstudio's event writers are module globals; a second run in one process needs its own."""
    for event_writer in writer.EVENT_WRITERS:
        if hasattr(event_writer, "tb_writer"):
            event_writer.tb_writer.close()
    writer.EVENT_WRITERS.clear()
    writer.EVENT_STORAGE.clear()
    writer.GLOBAL_BUFFER.clear()


if TYPE_CHECKING:
    from evos_nerf.nerfstudio.datamanager import EvosDataManager
    from evos_nerf.nerfstudio.pipeline import EvosPipeline


def log_images(dm: "EvosDataManager", config: EvosInspectionConfig, step: int) -> List[str]:
    """Queue the maps and the histogram for the writer; returns the image names (for tests and logs)."""
    owned = [c for c in range(dm.selector.store.num_cameras) if dm.selector.store.owns(c)]
    cameras = evenly_spaced(owned, config.num_log_cameras)
    names = []
    for kind, tag in (("fitness", "fitness"), ("selection count", "selection_count")):
        for camera, image in camera_heatmaps(dm, cameras, kind).items():
            name = f"EVOS/{tag}/camera_{camera:05d}"
            writer.put_image(name, image, step)
            names.append(name)
    if dm.selector.histogram is not None:
        counts, edges = dm.selector.histogram
        image = histogram_image(counts, edges, f"EVOS fitness histogram (key iteration {dm.selector.last_key_step})")
        writer.put_image("EVOS/fitness_histogram", torch.from_numpy(image), step)
        names.append("EVOS/fitness_histogram")
    return names


def log_key_iteration(dm: "EvosDataManager", step: int) -> None:
    """Scalars of a key iteration for tensorboard / wandb (no-ops without a writer or off rank 0)."""
    selector = dm.selector
    if selector.last_key_step != step or not selector.statistics:
        return
    stats = selector.statistics
    writer.put_scalar("EVOS/never_visited_share", stats["never_visited_share"], step)
    writer.put_scalar("EVOS/crossover_balance_p", selector.balance, step)
    writer.put_scalar("EVOS/mean_fitness", stats["fitness_mean"], step)
    writer.put_scalar("EVOS/p99_fitness", stats["fitness_p99"], step)
    if math.isfinite(stats.get("pool_hardness", math.nan)):
        writer.put_scalar("EVOS/pool_hardness", stats["pool_hardness"], step)
    if selector.pool is not None and selector.pool.size:
        # A sample of the pool, drawn with its own generator: logging must not change the selection.
        members = selector.pool.sample(POOL_SAMPLE, torch.Generator().manual_seed(step))
        writer.put_scalar("EVOS/pool_mean_fitness", float(selector.store.fitness[members].float().mean()), step)


def image_logging_enabled(attrs: TrainingCallbackAttributes) -> bool:
    trainer = attrs.trainer
    if trainer is None or not comms.is_main_process():
        return False
    cfg = trainer.config
    return bool(cfg.is_tensorboard_enabled() or cfg.is_wandb_enabled() or cfg.is_comet_enabled())


def inspection_callbacks(pipeline: "EvosPipeline", attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
    """The viewer panel's per-step refresh and, with an image-capable writer, the image logging."""
    callbacks: List[TrainingCallback] = []
    panel = getattr(pipeline, "EVOS", None)
    if panel is not None:
        callbacks.append(panel.training_callback())
    config: Optional[EvosInspectionConfig] = getattr(pipeline.config, "inspection", None)
    dm = pipeline.datamanager
    callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], lambda step: log_key_iteration(dm, step)))
    if config is not None and config.steps_per_log_images > 0 and image_logging_enabled(attrs):
        callbacks.append(
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                lambda step: log_images(dm, config, step),
                update_every_num_iters=config.steps_per_log_images,
            )
        )
    return callbacks
