"""Per-camera fitness and selection-count heatmaps, and the settings for showing them.

One place computes the maps so that the viewer's camera thumbnails and the images logged to
tensorboard / wandb agree. Maps of the cameras shown together share one colour scale, so a
bright camera really has more error (or was trained more often) than a dark one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Sequence

from torch import Tensor

from evos_nerf.heatmaps import colorize_counts, colorize_fitness, count_range, fitness_range

if TYPE_CHECKING:
    from evos_nerf.nerfstudio.datamanager import EvosDataManager

MapKind = Literal["fitness", "selection count"]
CameraImages = Literal["RGB", "fitness", "selection count"]


@dataclass
class EvosInspectionConfig:
    """What evos-nerf shows about its selection (``--pipeline.inspection.*``)."""

    viewer_panel: bool = True
    """Add the EVOS folder (controls, read-outs, heatmap thumbnails) to the viewer's Control tab."""
    camera_images: CameraImages = "RGB"
    """What the training-camera frustums show at start (switchable in the panel)."""
    steps_per_log_images: int = 500
    """With --vis tensorboard / wandb / comet (alone or with the viewer): log fitness maps,
    selection-count maps and the fitness histogram every this many steps (0: never)."""
    num_log_cameras: int = 3
    """How many training cameras (evenly spaced) get their maps logged."""
    readout_seconds: float = 1.0
    """Minimum wall-clock time between read-out refreshes in the viewer (they also refresh at key iterations)."""
    thumbnail_seconds: float = 2.0
    """Minimum wall-clock time between heatmap thumbnail refreshes (at key iterations), so large
    captures do not spend their training time re-encoding hundreds of thumbnails."""
    selection_counts: Literal["auto", "on", "off"] = "auto"
    """Per-pixel selection counts for the selection-count maps: +1 byte per training pixel on top of
    the store's 4. auto keeps them when the viewer's EVOS panel (--vis viewer*, the ns-train
    default) or image logging (--vis tensorboard / wandb / comet) can show them."""

    def validate(self) -> "EvosInspectionConfig":
        if self.steps_per_log_images < 0:
            raise ValueError(f"pipeline.inspection.steps-per-log-images must be >= 0, got {self.steps_per_log_images}")
        if self.num_log_cameras < 0:
            raise ValueError(f"pipeline.inspection.num-log-cameras must be >= 0, got {self.num_log_cameras}")
        return self


def wants_selection_counts(config: EvosInspectionConfig, trainer_config: Any) -> bool:
    """Whether the run keeps selection counts: on, off, or (auto) when the panel or image logs can show them."""
    if config.selection_counts != "auto":
        return config.selection_counts == "on"
    viewer = trainer_config.is_viewer_enabled() or trainer_config.is_viewer_legacy_enabled()
    writer = trainer_config.is_tensorboard_enabled() or trainer_config.is_wandb_enabled() or trainer_config.is_comet_enabled()
    logs = writer and config.steps_per_log_images > 0 and config.num_log_cameras > 0
    return (viewer and config.viewer_panel) or logs


def resolve_selection_counts(trainer_config: Any) -> None:
    """Tell the datamanager whether to keep selection counts (EvosTrainer.setup, before the pipeline exists)."""
    pipeline = trainer_config.pipeline
    inspection = getattr(pipeline, "inspection", None)
    if isinstance(inspection, EvosInspectionConfig) and hasattr(pipeline.datamanager, "selection_counts"):
        pipeline.datamanager.selection_counts = wants_selection_counts(inspection, trainer_config)


def raw_maps(dm: "EvosDataManager", cameras: Sequence[int], kind: MapKind) -> Dict[int, Tensor]:
    """[H, W] fitness or selection counts of each camera (cameras of other ranks are skipped; no
    selection counts when they are off)."""
    if kind == "selection count" and not dm.has_selection_counts:
        return {}
    store = dm.selector.store
    read = store.fitness_map if kind == "fitness" else store.selection_count_map
    return {c: read(c) for c in cameras if store.owns(c)}


def camera_heatmaps(dm: "EvosDataManager", cameras: Sequence[int], kind: MapKind) -> Dict[int, Tensor]:
    """[H, W, 3] RGB in [0, 1] at each camera's own resolution, on one colour scale for all of them.

    Fitness is shown on a log10 scale (magma: dark = low or never measured); selection counts
    linearly from 0 (viridis: dark = never trained, i.e. starved).
    """
    maps = raw_maps(dm, cameras, kind)
    if kind == "fitness":
        value_range = fitness_range(list(maps.values()))
        return {c: colorize_fitness(m, value_range) for c, m in maps.items()}
    high = count_range(maps.values())
    return {c: colorize_counts(m, high) for c, m in maps.items()}


def evenly_spaced(cameras: Sequence[int], count: int) -> List[int]:
    """``count`` cameras spread over the list (all of them when there are fewer)."""
    cameras = list(cameras)
    if count >= len(cameras):
        return cameras
    if count <= 0:
        return []
    step = (len(cameras) - 1) / max(count - 1, 1)
    return sorted({cameras[round(i * step)] for i in range(count)})
