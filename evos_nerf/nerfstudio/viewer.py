"""The EVOS folder of nerfstudio's viewer: live controls, read-outs and heatmap thumbnails.

nerfstudio's viewer installs every ``ViewerElement`` it finds by walking the pipeline's
attributes, descending only into ``nn.Module``s (the pixel sampler is not one), and names each
folder after the attribute path. So the panel is an ``nn.Module`` the pipeline holds as
``pipeline.EVOS``. It has no parameters or buffers, so checkpoints are unchanged, and it keeps
the datamanager as a plain reference rather than a submodule for the same reason.

Controls write the selector's controls (``datamanager.controls``), which the selector applies at the next step (a new
selection ratio re-ranks the pool; distributed runs broadcast rank 0's values, and the viewer
only exists on rank 0). nerfstudio runs element callbacks under the trainer's train lock, so a
change never lands halfway through a step.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Dict, List, Optional, get_args

import numpy as np
import torch.nn.functional as F
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import (
    ViewerCheckbox,
    ViewerControl,
    ViewerDropdown,
    ViewerSlider,
    ViewerText,
)
from torch import Tensor, nn

from evos_nerf.core.schedules import check_ratio
from evos_nerf.errors import UserInputError
from evos_nerf.heatmaps import to_uint8
from evos_nerf.nerfstudio.inspection import CameraImages, EvosInspectionConfig, camera_heatmaps

if TYPE_CHECKING:
    from nerfstudio.viewer.viewer import Viewer
    from viser import ViserServer

    from evos_nerf.nerfstudio.datamanager import EvosDataManager

CAMERA_IMAGES = list(get_args(CameraImages))
THUMBNAIL_SIZE = 100
"""Shorter side of a frustum thumbnail in pixels, as nerfstudio's Viewer.init_scene draws them."""


class ViewerReadout(ViewerText):
    """A read-only text field.

    Unlike nerfstudio's elements it registers no update callback: nerfstudio wraps every element
    callback in the train lock plus a re-render of every client, which read-outs refreshed each
    second would otherwise trigger over and over.
    """

    def __init__(self, name: str, hint: Optional[str] = None) -> None:
        super().__init__(name, "-", disabled=True, hint=hint)

    def install(self, viser_server: "ViserServer") -> None:
        self._create_gui_handle(viser_server)

    def show(self, text: str) -> None:
        if text != self.value:
            self.value = text


class EvosStatistics(nn.Module):
    """Read-outs of the fitness store, refreshed at key iterations (the "statistics" sub-folder)."""

    def __init__(self) -> None:
        super().__init__()
        self.key_interval = ViewerReadout("Key interval", "Steps between key iterations now (lin_dec schedule)")
        self.steps_since_key = ViewerReadout("Steps since key", "A key iteration re-measures and re-ranks every pixel")
        self.never_visited_share = ViewerReadout("Never visited", "Valid training pixels not trained or measured yet")
        self.fitness_mean = ViewerReadout("Fitness mean", "Mean cached squared RGB error of visited pixels")
        self.fitness_p50 = ViewerReadout("Fitness p50", "Median cached error")
        self.fitness_p99 = ViewerReadout("Fitness p99", "99th-percentile cached error")
        self.pool_hardness = ViewerReadout(
            "Pool hardness", "Mean error of the pool's trained rays over the mutants' in the last key interval "
            "(1: the ranking finds no harder pixels than chance)"
        )

    def show(self, stats: Dict[str, float]) -> None:
        if not stats:
            return
        self.key_interval.show(f"{int(stats['key_interval'])} steps")
        self.steps_since_key.show(f"{int(stats['steps_since_key'])}")
        self.never_visited_share.show(f"{100.0 * stats['never_visited_share']:.1f}%")
        for name in ("fitness_mean", "fitness_p50", "fitness_p99"):
            getattr(self, name).show(f"{stats[name]:.3g}")
        hardness = stats.get("pool_hardness", math.nan)
        self.pool_hardness.show("-" if math.isnan(hardness) else f"{hardness:.2f}x")


class EvosPanel(nn.Module):
    """Selection and mutation ratio sliders, a pause switch, read-outs, and a camera-image toggle."""

    def __init__(self, datamanager: "EvosDataManager", config: EvosInspectionConfig) -> None:
        super().__init__()
        object.__setattr__(self, "_datamanager", datamanager)  # a reference, not a submodule
        self.config = config
        controls = datamanager.controls
        self.selection_ratio = ViewerSlider(
            "Selection ratio", controls.ratio, min(0.01, controls.ratio), 1.0, 0.01,
            cb_hook=self._on_selection_ratio,
            hint="r0: share of training pixels EVOS trains on (fittest + mutants); a change re-ranks at the next step",
        )
        self.mutation_ratio = ViewerSlider(
            "Mutation ratio", controls.mutation, 0.0, 1.0, 0.01,
            cb_hook=self._on_mutation_ratio,
            hint="alpha: share of every batch drawn uniformly from pixels outside the pool",
        )
        self.pause_evolution = ViewerCheckbox(
            "Pause evolution", controls.paused,
            cb_hook=self._on_pause,
            hint="Sample uniformly while ticked (fitness is still recorded)",
        )
        # Selection counts exist only when kept (--pipeline.inspection.selection-counts).
        shown = [c for c in CAMERA_IMAGES if c != "selection count" or getattr(datamanager, "has_selection_counts", False)]
        self.camera_images = ViewerDropdown(
            "Camera images", config.camera_images if config.camera_images in shown else "RGB", shown,
            cb_hook=lambda _: self.show_camera_images(),
            hint="What the training-camera frustums show; heatmaps refresh at key iterations",
        )
        self.statistics = EvosStatistics()
        self.viewer_control = ViewerControl()
        """Set up by the viewer: reaches the viser server and the camera frustums."""
        self._readout_time = float("-inf")
        self._readout_key_step: Optional[int] = None
        self._thumbnail_time = float("-inf")
        self._thumbnail_key_step: Optional[int] = None
        self._controls_shown = False

    # -- controls (run in viser's thread, under the train lock) ---------------------------------
    def _on_selection_ratio(self, element: ViewerSlider) -> None:
        if self._valid_ratio(element, "ratio", allow_zero=False):
            self._set_control("ratio", float(element.value), "the pool is re-ranked at the next step")

    def _on_mutation_ratio(self, element: ViewerSlider) -> None:
        if self._valid_ratio(element, "mutation", allow_zero=True):
            self._set_control("mutation", float(element.value), "from the next step")

    def _valid_ratio(self, element: ViewerSlider, name: str, allow_zero: bool) -> bool:
        """A value typed into the slider's number box can leave the slider's range; such a value
        would stop training at the next step, so it is refused and the box reset."""
        try:
            check_ratio(f"EVOS {name.replace('_', ' ')}", float(element.value), allow_zero=allow_zero)
        except UserInputError as err:
            CONSOLE.print(f"[yellow]EVOS viewer: {err}; kept {getattr(self._datamanager.controls, name)}[/yellow]")
            element.value = getattr(self._datamanager.controls, name)
            return False
        return True

    def _on_pause(self, element: ViewerCheckbox) -> None:
        self._set_control("paused", bool(element.value), "uniform sampling" if element.value else "EVOS selection")

    def _set_control(self, name: str, value, effect: str) -> None:
        controls = self._datamanager.controls
        if getattr(controls, name) == value:
            return
        setattr(controls, name, value)
        CONSOLE.print(f"EVOS viewer: {name.replace('_', ' ')} set to {value} ({effect})")

    # -- refresh -------------------------------------------------------------------------------
    @property
    def viewer(self) -> Optional["Viewer"]:
        """The running viewer (rank 0 with --vis viewer*), else None."""
        return getattr(self.viewer_control, "viewer", None)

    def training_callback(self) -> TrainingCallback:
        return TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.refresh)

    def refresh(self, step: int) -> None:
        """Every step: read-outs at most every ``readout_seconds`` (and at each key iteration);
        heatmap thumbnails after each key iteration, at most every ``thumbnail_seconds``."""
        if self.viewer is None:
            return
        dm = self._datamanager
        if not self._controls_shown:
            self._show_controls()
        now = time.monotonic()
        key_step = dm.selector.last_key_step
        if key_step != self._readout_key_step or now - self._readout_time >= self.config.readout_seconds:
            self.statistics.show(dm.selector.statistics)
            self._readout_time, self._readout_key_step = now, key_step
        if (
            self.camera_images.value != "RGB"
            and key_step != self._thumbnail_key_step
            and now - self._thumbnail_time >= self.config.thumbnail_seconds
        ):
            self.show_camera_images()

    def _show_controls(self) -> None:
        """Once, at the first step: the controls as the run actually starts, which differs from the
        config when a checkpoint restored them (it loads after the viewer is built). Only once, so
        a user's change waiting for the train lock is never overwritten."""
        controls = self._datamanager.controls
        for element, value in ((self.selection_ratio, controls.ratio),
                               (self.mutation_ratio, controls.mutation),
                               (self.pause_evolution, controls.paused)):
            if element.value != value:
                element.value = value
        self._controls_shown = True

    def show_camera_images(self) -> None:
        """Redraw every training-camera frustum with its RGB image, fitness map or selection counts."""
        viewer = self.viewer
        handles = getattr(viewer, "camera_handles", None)
        if not handles or not hasattr(self._datamanager, "selector"):
            return  # before Viewer.init_scene, or a datamanager without a store (inference)
        kind = self.camera_images.value
        cameras = sorted(handles)
        if kind == "RGB":
            dataset = self._datamanager.train_dataset
            images = {c: dataset[c]["image"][..., :3] for c in cameras}
        else:
            images = camera_heatmaps(self._datamanager, cameras, kind)  # type: ignore[arg-type]
        with viewer.viser_server.atomic():
            for camera, image in images.items():
                replace_frustum_image(viewer, camera, thumbnail(image))
        self._thumbnail_time = time.monotonic()
        self._thumbnail_key_step = self._datamanager.selector.last_key_step


def thumbnail(image01: Tensor, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """[H, W, 3] in [0, 1] -> uint8 with the shorter side ``size``: area-averaged when shrinking,
    nearest when enlarging (tiny cameras keep crisp pixels)."""
    h, w = image01.shape[:2]
    scale = size / min(h, w)
    out_size = (max(1, round(h * scale)), max(1, round(w * scale)))
    mode = "area" if scale < 1 else "nearest"
    resized = F.interpolate(image01.float().permute(2, 0, 1)[None], size=out_size, mode=mode)[0]
    return to_uint8(resized.permute(1, 2, 0))


def replace_frustum_image(viewer: "Viewer", camera: int, image: np.ndarray) -> None:
    """Re-add a training camera's frustum with another image, keeping pose, visibility and clicks.

    viser 0.2.7 cannot change a frustum's image in place; adding a node under the same name
    replaces it. The geometry is computed as nerfstudio's ``Viewer.init_scene`` computes it.
    """
    old = viewer.camera_handles[camera]
    cam = viewer.pipeline.datamanager.train_dataset.cameras[camera]
    new = viewer.viser_server.scene.add_camera_frustum(
        name=old._impl.name,
        fov=float(2 * np.arctan((cam.cx / cam.fx[0]).cpu())),
        aspect=float((cam.cx[0] / cam.cy[0]).cpu()),
        scale=viewer.config.camera_frustum_scale,
        image=image,
        wxyz=old.wxyz,
        position=old.position,
        visible=old.visible,
    )
    callbacks: List = list(old._impl.click_cb or [])
    for callback in callbacks:  # clicking a frustum still moves the view to that camera
        new.on_click(callback)
    viewer.camera_handles[camera] = new


def build_panel(datamanager: "EvosDataManager", config: EvosInspectionConfig) -> Optional[EvosPanel]:
    """The panel, or None when disabled or the datamanager has no EVOS controls (inference)."""
    config.validate()
    if not config.viewer_panel or not hasattr(datamanager, "controls"):
        return None
    return EvosPanel(datamanager, config)

