"""The EVOS viewer panel on a tiny pipeline, with nerfstudio's real Viewer and viser server.

Controls are changed the way a browser changes them: by assigning the viser GUI handle's value,
which runs the element callbacks in viser's thread (nerfstudio wraps them in the train lock).
"""

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import evos_nerf.nerfstudio.config  # noqa: F401  (first: nerfstudio's writer module cannot be imported on its own)
from nerfstudio.utils import writer  # noqa: E402
from evos_nerf.nerfstudio.evos_logging import log_images
from evos_nerf.nerfstudio.inspection import EvosInspectionConfig, camera_heatmaps, evenly_spaced
from evos_nerf.nerfstudio.viewer import thumbnail
from evos_nerf.scene import make_scene

SIZE, NUM_TRAIN, BATCH = 32, 8, 128


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("scene") / "tiny", resolution=SIZE, num_train=NUM_TRAIN, num_val=2, num_test=2)


def tiny_pipeline(scene: Path):
    """The evos-nerf-blender pipeline, reduced as tests/nerf_helpers.TINY_MODEL_FLAGS reduces it."""
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config

    cfg = evos_nerf_blender_config().pipeline
    cfg.datamanager.data = scene
    cfg.datamanager.train_num_rays_per_batch = cfg.datamanager.eval_num_rays_per_batch = BATCH
    sampler = cfg.datamanager.pixel_sampler
    sampler.init_interval, sampler.end_interval, sampler.refresh_budget, sampler.seed = 10, 5, 256, 0
    sampler.ratio, sampler.mutation = 0.5, 0.25
    model = cfg.model
    model.implementation = "torch"
    model.num_nerf_samples_per_ray, model.num_proposal_samples_per_ray = 16, (24, 16)
    model.log2_hashmap_size, model.max_res, model.hidden_dim, model.hidden_dim_color = 12, 128, 32, 32
    pipeline = cfg.setup(device="cpu", test_mode="val")
    pipeline.datamanager.selector.total_steps = 200
    pipeline.train()
    return pipeline


def train(pipeline, steps: range) -> None:
    """Training steps as far as EVOS is concerned (selection, forward, fitness feedback); no
    optimizer, which these tests do not need."""
    with torch.no_grad():
        for step in steps:
            pipeline.get_train_loss_dict(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def viewer(scene, tmp_path):
    """A pipeline shown in nerfstudio's own Viewer (viser on 127.0.0.1), with its camera frustums."""
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.viewer.viewer import Viewer

    pipeline = tiny_pipeline(scene)
    lock = threading.Lock()
    config = ViewerConfig(websocket_host="127.0.0.1", websocket_port=free_port())
    view = Viewer(config, tmp_path / "viewer_log_filename.txt", scene, pipeline, trainer=None, train_lock=lock)
    view.init_scene(pipeline.datamanager.train_dataset, "training")
    yield view
    view.viser_server.stop()


def test_heatmaps_have_the_camera_resolution_are_finite_and_change_with_training(scene):
    pipeline = tiny_pipeline(scene)
    dm = pipeline.datamanager
    cameras = list(range(NUM_TRAIN))
    train(pipeline, range(0, 3))
    before = {kind: camera_heatmaps(dm, cameras, kind) for kind in ("fitness", "selection count")}
    train(pipeline, range(3, 15))
    after = {kind: camera_heatmaps(dm, cameras, kind) for kind in ("fitness", "selection count")}
    for kind in before:
        assert sorted(after[kind]) == cameras
        for camera, image in after[kind].items():
            assert image.shape == (SIZE, SIZE, 3)
            assert bool(torch.isfinite(image).all()) and float(image.min()) >= 0 and float(image.max()) <= 1
        changed = [c for c in cameras if not torch.equal(before[kind][c], after[kind][c])]
        assert changed, f"{kind} heatmaps did not change after 12 training steps"
    # The raw maps behind them: selection counts add up to the rays trained.
    total_visits = sum(float(dm.selector.store.selection_count_map(c).sum()) for c in cameras)
    assert total_visits == 15 * BATCH


def test_the_viewer_discovers_the_evos_folder_with_its_controls_and_readouts(viewer):
    paths = {path: element.name for path, element in viewer.viewer_elements}
    evos = {name for path, name in paths.items() if path.startswith("Custom Elements/EVOS/")}
    assert {"Selection ratio", "Mutation ratio", "Pause evolution", "Camera images"} <= evos
    assert {"Key interval", "Steps since key", "Never visited", "Fitness mean", "Fitness p50", "Fitness p99"} <= evos
    panel = viewer.pipeline.EVOS
    assert panel.selection_ratio.gui_handle is not None  # installed in the running viser server
    assert panel.viewer is viewer


def test_controls_changed_in_the_viewer_change_selection_at_the_next_step(viewer):
    pipeline = viewer.pipeline
    dm, panel = pipeline.datamanager, pipeline.EVOS
    mutants = lambda: dm.selector.last_selection.num_mutants  # noqa: E731
    train(pipeline, range(0, 12))  # past the first ranking (step 10)
    assert mutants() == round(0.25 * BATCH)
    pool_before = dm.selector.pool.size

    panel.mutation_ratio.gui_handle.value = 0.75
    assert wait_for(lambda: dm.controls.mutation == 0.75)
    train(pipeline, range(12, 13))
    assert mutants() == round(0.75 * BATCH)

    panel.selection_ratio.gui_handle.value = 0.8
    assert wait_for(lambda: dm.controls.ratio == 0.8)
    assert dm.selector.is_key(13), "a new selection ratio must re-rank at the next step"
    train(pipeline, range(13, 14))
    assert dm.selector.last_key_step == 13
    pixels = NUM_TRAIN * SIZE * SIZE
    assert dm.selector.pool.size == int((0.8 - 0.75 * 0.8) * pixels) != pool_before  # survivors (r - m) N

    panel.pause_evolution.gui_handle.value = True
    assert wait_for(lambda: dm.controls.paused)
    train(pipeline, range(14, 15))
    assert mutants() == BATCH  # paused: the whole batch is uniform
    panel.pause_evolution.gui_handle.value = False
    assert wait_for(lambda: not dm.controls.paused)
    train(pipeline, range(15, 16))
    assert mutants() == round(0.75 * BATCH)

    # A value typed into the number box outside (0, 1] is refused; training goes on.
    panel.selection_ratio.gui_handle.value = 0.0
    assert wait_for(lambda: panel.selection_ratio.value == 0.8)
    assert dm.controls.ratio == 0.8
    train(pipeline, range(16, 17))


def test_the_panel_shows_the_controls_the_run_starts_with(viewer):
    dm, panel = viewer.pipeline.datamanager, viewer.pipeline.EVOS
    # Controls set after the panel was built (by code, or a viewer of an earlier session) show at the first refresh.
    dm.controls.ratio, dm.controls.paused = 0.4, True
    panel.refresh(0)
    assert panel.selection_ratio.value == 0.4 and panel.pause_evolution.value is True
    assert panel.mutation_ratio.value == 0.25
    time.sleep(0.2)  # the echoed GUI callbacks are no-ops
    assert (dm.controls.ratio, dm.controls.mutation, dm.controls.paused) == (0.4, 0.25, True)


def test_readouts_follow_training(viewer):
    pipeline = viewer.pipeline
    panel = pipeline.EVOS
    stats = panel.statistics
    train(pipeline, range(0, 12))
    panel.refresh(11)
    assert stats.key_interval.value == "9 steps"  # lin_dec 10 -> 5 over 200 steps: floor(10 - 5 * 11 / 200)
    assert stats.steps_since_key.value == str(11 - pipeline.datamanager.selector.last_key_step) != "0"
    share = float(stats.never_visited_share.value.rstrip("%"))
    assert 0.0 < share < 100.0
    assert float(stats.fitness_mean.value) > 0 and float(stats.fitness_p99.value) >= float(stats.fitness_p50.value)


def test_camera_images_toggle_draws_heatmaps_on_every_frustum_keeping_pose_and_clicks(viewer, monkeypatch):
    pipeline = viewer.pipeline
    dm, panel = pipeline.datamanager, pipeline.EVOS
    train(pipeline, range(0, 12))
    sent = {}
    draw = viewer.viser_server.scene.add_camera_frustum

    def recording_draw(*args, **kwargs):
        sent[kwargs["name"]] = kwargs["image"]
        return draw(*args, **kwargs)

    monkeypatch.setattr(viewer.viser_server.scene, "add_camera_frustum", recording_draw)
    before = dict(viewer.camera_handles)
    panel.camera_images.gui_handle.value = "fitness"
    # The GUI callback runs in viser's thread and stores each new frustum's handle after drawing
    # it, so wait for the last handle, not the last draw (a loaded CPU showed the difference).
    assert wait_for(lambda: len(sent) == NUM_TRAIN
                    and all(viewer.camera_handles[c] is not before[c] for c in before), timeout=60)
    expected = camera_heatmaps(dm, list(range(NUM_TRAIN)), "fitness")
    for camera, handle in viewer.camera_handles.items():
        assert np.array_equal(sent[f"/cameras/camera_{camera:05d}"], thumbnail(expected[camera]))
        assert handle is not before[camera]
        assert np.allclose(handle.position, before[camera].position)
        assert np.allclose(handle.wxyz, before[camera].wxyz)
        assert handle._impl.click_cb, "frustum lost its click-to-jump callback"

    # Redrawn from the new fitness after the next key iteration (step 18: t = 19, 19 mod 9 == 1).
    sent.clear()
    panel.config.thumbnail_seconds = 0.0
    train(pipeline, range(12, 18))
    panel.refresh(17)
    assert not sent, "thumbnails are redrawn at key iterations only"
    train(pipeline, range(18, 19))
    panel.refresh(18)
    assert dm.selector.last_key_step == 18 and len(sent) == NUM_TRAIN
    # And back to the training images.
    sent.clear()
    panel.camera_images.gui_handle.value = "RGB"
    assert wait_for(lambda: len(sent) == NUM_TRAIN)
    rgb = dm.train_dataset[3]["image"][..., :3]
    assert np.array_equal(sent["/cameras/camera_00003"], thumbnail(rgb))
    assert sent["/cameras/camera_00003"].shape == (100, 100, 3)


def test_image_logging_queues_maps_and_histogram_for_the_writer(scene):
    pipeline = tiny_pipeline(scene)
    dm = pipeline.datamanager
    train(pipeline, range(0, 12))
    writer.EVENT_STORAGE.clear()
    try:
        names = log_images(dm, EvosInspectionConfig(num_log_cameras=3), step=11)
        events = {e["name"]: e["event"] for e in writer.EVENT_STORAGE}
    finally:
        writer.EVENT_STORAGE.clear()
    cameras = evenly_spaced(range(NUM_TRAIN), 3)
    assert cameras == [0, 4, 7]
    expected = {f"EVOS/{tag}/camera_{c:05d}" for tag in ("fitness", "selection_count") for c in cameras}
    assert expected | {"EVOS/fitness_histogram"} == set(names) == set(events)
    for name in expected:
        assert events[name].shape == (SIZE, SIZE, 3)
    histogram = events["EVOS/fitness_histogram"]
    assert histogram.ndim == 3 and histogram.shape[2] == 3 and bool(torch.isfinite(histogram).all())


def test_selection_counts_are_kept_only_when_the_viewer_or_image_logs_can_show_them():
    from evos_nerf.nerfstudio.config import evos_nerf_config
    from evos_nerf.nerfstudio.inspection import resolve_selection_counts

    def decided(vis, **inspection):
        config = evos_nerf_config()
        config.vis = vis
        for name, value in inspection.items():
            setattr(config.pipeline.inspection, name, value)
        resolve_selection_counts(config)
        return config.pipeline.datamanager.selection_counts

    assert decided("viewer") and decided("tensorboard") and decided("viewer+wandb")  # ns-train's default: kept
    assert not decided("viewer", viewer_panel=False)
    assert not decided("tensorboard", steps_per_log_images=0)
    assert not decided("viewer", selection_counts="off") and decided("tensorboard", steps_per_log_images=0, selection_counts="on")


def test_without_selection_counts_the_panel_and_the_logs_show_fitness_only(scene):
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config
    from evos_nerf.nerfstudio.viewer import EvosPanel

    cfg = evos_nerf_blender_config().pipeline.datamanager
    cfg.data, cfg.selection_counts = scene, False
    dm = cfg.setup(device="cpu")
    assert dm.selector.store.visits is None and not dm.has_selection_counts
    panel = EvosPanel(dm, EvosInspectionConfig(camera_images="selection count"))
    assert panel.camera_images.options == ["RGB", "fitness"] and panel.camera_images.value == "RGB"
    assert camera_heatmaps(dm, [0, 1], "selection count") == {}
    try:
        names = log_images(dm, EvosInspectionConfig(num_log_cameras=2), 0)
    finally:
        writer.EVENT_STORAGE.clear()
    assert sorted(names) == ["EVOS/fitness/camera_00000", "EVOS/fitness/camera_00007", "EVOS/fitness_histogram"]
