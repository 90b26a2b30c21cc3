"""`ns-train evos-nerf` as users run it: registration, end-to-end training, resume, ns-eval, ns-render,
ns-export, bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nerf_helpers import as_nerfstudio_data, ns, train_args
from PIL import Image

from evos_nerf.nerfstudio.evos_checkpoint import read_state
from evos_nerf.scene import make_scene


def _per_pixel(state: dict, kind: str) -> torch.Tensor:
    """All cameras' per-pixel entries of an EVOS state, in camera order."""
    keys = sorted(k for k in state if k.startswith(kind + "/cam"))
    return torch.cat([state[k] for k in keys])


def _untext(t: torch.Tensor) -> str:
    return bytes(t.tolist()).decode()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("scene") / "tiny", resolution=32, num_train=8, num_val=2, num_test=2)


def test_entry_points_load_first_thing_in_a_fresh_interpreter():
    code = (
        "import importlib.metadata as m\n"
        "eps = [e for e in m.entry_points(group='nerfstudio.method_configs') if e.name.startswith('evos-nerf')]\n"
        "specs = [e.load() for e in eps]\n"
        "print(sorted(s.config.method_name for s in specs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "['evos-nerf', 'evos-nerf-blender']" in out.stdout


def test_ns_train_help_lists_the_evos_flags(tmp_path):
    out = ns("ns-train", ["evos-nerf", "--help"], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("pixel-sampler.strategy", "pixel-sampler.mutation", "pixel-sampler.ratio", "pixel-sampler.importance-weights",
                 "pixel-sampler.crossover", "pixel-sampler.refresh-budget", "pixel-sampler.unvisited-prior",
                 "pixel-sampler.mutation-control"):
        assert flag in out.stdout, flag


@pytest.mark.slow
def test_default_config_trains_on_cpu_without_device_flags(scene, tmp_path):
    """No --machine.device-type, --mixed-precision or --pipeline.model.implementation: it must pick
    the CPU, full precision and the torch hash grid by itself (only the model is shrunk, for time)."""
    out = ns("ns-train", train_args(scene, tmp_path / "out", 3), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "hash-grid implementation torch on cpu" in out.stdout
    assert list((tmp_path / "out").glob("**/nerfstudio_models/step-000000002.ckpt"))


@pytest.mark.slow
def test_train_checkpoint_resume_and_eval_end_to_end(scene, tmp_path):
    out = tmp_path / "out"
    first = ns("ns-train", train_args(scene, out, 30), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "EVOS fitness store: 8 images, 8,192 pixels" in first.stdout
    assert "EVOS per pixel: 5 bytes (float16 fitness, int16 epoch, uint8 selection count)" in first.stdout
    run = out / "tiny" / "evos-nerf-blender" / "run"
    ckpt = torch.load(run / "nerfstudio_models" / "step-000000029.ckpt", map_location="cpu", weights_only=False)
    pipeline = ckpt["pipeline"]
    assert not [k for k in pipeline if k.startswith("datamanager.selector")]  # step-N.ckpt is upstream's
    run_id = pipeline["datamanager._extra_state"]["evos_run_id"]
    assert pipeline["_model._extra_state"]["implementation"] == "torch"
    assert {"config.yml", "evos_state", "nerfstudio_models"} <= {p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "nerfstudio_models").iterdir()) == ["step-000000029.ckpt"]
    state = read_state(run / "evos_state" / "step-000000029")
    fitness, epoch = _per_pixel(state, "fitness"), _per_pixel(state, "epoch")
    assert fitness.dtype == torch.float16 and epoch.dtype == torch.int16 and fitness.numel() == 8 * 32 * 32
    assert int((epoch > 0).sum()) > 1000  # 30 steps x 128 rays, mostly distinct pixels
    assert "pool/cam00000" in state
    assert "visits/cam00000" in state  # --vis tensorboard logs selection-count maps: counts kept (auto)
    assert _untext(state["meta/run_id"]) == run_id

    resumed = ns("ns-train", train_args(scene, out, 10, ["--load-dir", str(run / "nerfstudio_models"),
                                                         "--pipeline.inspection.selection-counts", "off"]), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "EVOS per pixel: 4 bytes (float16 fitness, int16 epoch)" in resumed.stdout
    assert sorted(p.name for p in (run / "evos_state").iterdir()) == ["step-000000039"]  # only the latest kept
    state2 = read_state(run / "evos_state" / "step-000000039")
    fitness2, epoch2 = _per_pixel(state2, "fitness"), _per_pixel(state2, "epoch")
    # The store continued: old measurements kept, new ones stamped with later epochs.
    assert int(epoch2.max()) > int(epoch.max())
    assert int((epoch2 > 0).sum()) >= int((epoch > 0).sum())
    untouched = epoch2 == epoch
    assert torch.equal(fitness2[untouched], fitness[untouched])
    assert _untext(state2["meta/run_id"]) == run_id  # a resume keeps the run's identity
    assert "visits/cam00000" not in state2

    result = tmp_path / "eval.json"
    evaluated = ns("ns-eval", ["--load-config", str(run / "config.yml"), "--output-path", str(result)], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(result.read_text())["results"]
    baseline = constant_prediction_psnr(scene / "test")
    assert metrics["psnr"] > baseline + 1.0, (metrics["psnr"], baseline)  # beats any flat colour
    assert "lpips" not in metrics  # unavailable offline: left out, never faked


def constant_prediction_psnr(folder: Path) -> float:
    """PSNR of the best of two trivial predictions (all white, the mean colour) on the test images,
    composited on white as nerfstudio's blender evaluation does."""
    import numpy as np

    images = []
    for png in sorted(folder.glob("*.png")):
        rgba = np.asarray(Image.open(png).convert("RGBA"), dtype=np.float64) / 255.0
        images.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
    pixels = np.concatenate([im.reshape(-1, 3) for im in images])
    best = min(((pixels - c) ** 2).mean() for c in (np.ones(3), pixels.mean(axis=0)))
    return float(-10.0 * np.log10(best))


def test_a_selection_seed_changes_the_pixels_and_leaves_the_trainers_rng_alone(scene):
    from evos_nerf.nerfstudio.datamanager import EvosDataManagerConfig
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    def build(seed):
        torch.manual_seed(0)
        cfg = EvosDataManagerConfig(dataparser=BlenderDataParserConfig(data=scene), train_num_rays_per_batch=64)
        cfg.pixel_sampler.seed = seed
        manager = cfg.setup(device="cpu")
        return manager, torch.get_rng_state()  # the model is initialised from this stream next

    (default, after_default), (seeded, after_seeded) = build(None), build(1001)
    assert torch.equal(after_default, after_seeded)
    assert not torch.equal(default.selector.select(64).flat, seeded.selector.select(64).flat)


def test_resumed_datamanager_selects_exactly_as_the_original(scene, tmp_path):
    from evos_nerf.nerfstudio import evos_checkpoint
    from evos_nerf.nerfstudio.datamanager import EvosDataManagerConfig
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    def build():
        cfg = EvosDataManagerConfig(dataparser=BlenderDataParserConfig(data=scene), train_num_rays_per_batch=64)
        cfg.pixel_sampler.seed = 7
        return cfg.setup(device="cpu")

    original = build()
    for step in range(120):  # past the second key iteration (step 100): a pool exists
        original.selector.maybe_evolve(step)
        _, batch = original.next_train(step)
        original.selector.observe(batch["evos_flat"], torch.rand(64), step)
    assert original.selector.pool is not None
    models = tmp_path / "nerfstudio_models"
    evos_checkpoint.save(original.selector, models, 119, original.camera_sizes, original.run_id)
    assert not [k for k in original.state_dict() if "selector" in k]  # nothing of EVOS in step-N.ckpt

    resumed = build()
    resumed.load_state_dict(original.state_dict())  # the run identity, as nerfstudio's loader does
    evos_checkpoint.load(resumed.selector, models, 119, resumed.camera_sizes, resumed.checkpoint_run_id)
    for step in range(120, 123):
        original.selector.maybe_evolve(step)
        resumed.selector.maybe_evolve(step)
        assert torch.equal(original.next_train(step)[1]["indices"], resumed.next_train(step)[1]["indices"])


def _broken_copy(scene: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(scene, copy)
    return copy


@pytest.mark.parametrize("problem", ["missing_transforms", "image_size", "empty_train"])
def test_bad_scenes_fail_with_a_message_that_names_the_problem(scene, tmp_path, problem):
    broken = _broken_copy(scene, tmp_path)
    if problem == "missing_transforms":
        (broken / "transforms_train.json").unlink()
        expected = "missing transforms_train.json"
    elif problem == "image_size":
        Image.new("RGBA", (20, 20)).save(broken / "train" / "r_1.png")
        expected = "is 20x20 but the first train image is 32x32"
    else:
        meta = json.loads((broken / "transforms_train.json").read_text())
        meta["frames"] = []
        (broken / "transforms_train.json").write_text(json.dumps(meta))
        expected = "the train split is empty"
    out = ns("ns-train", train_args(broken, tmp_path / "out", 5), tmp_path, timeout=180)
    assert out.returncode != 0
    assert expected in " ".join((out.stderr + out.stdout).split())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    import evos_nerf.nerfstudio.trainer as trainer_module

    (tmp_path / "nerfstudio_models").mkdir()
    target = tmp_path / "nerfstudio_models" / "step-000000001.ckpt"
    trainer_module.atomic_torch_save({"a": torch.ones(3)}, target)
    assert torch.load(target)["a"].sum() == 3

    def dies_half_way(obj, path):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_torch_save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer_module.atomic_torch_save({"a": torch.zeros(3)}, target)
    assert torch.load(target)["a"].sum() == 3  # the previous checkpoint is intact
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert [p.name for p in tmp_path.iterdir()] == ["nerfstudio_models"]  # no temporary left behind


@pytest.fixture(scope="module")
def capture_run(scene, tmp_path_factory) -> tuple:
    """`ns-train evos-nerf` (the real-capture method) on the scene re-described as a capture."""
    tmp = tmp_path_factory.mktemp("capture")
    data = as_nerfstudio_data(scene, tmp / "ns_scene")
    args = train_args(data, tmp / "out", 6)
    args[0] = "evos-nerf"
    out = ns("ns-train", args + ["nerfstudio-data", "--downscale-factor", "1"], tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "out" / "tiny" / "evos-nerf" / "run", out.stdout


@pytest.mark.slow
def test_nerfstudio_data_scene_trains_with_the_default_method(capture_run):
    _, stdout = capture_run
    assert "EVOS fitness store: 8 images" in stdout  # every 8th of 10 frames held out (0 and 8)


@pytest.mark.slow
def test_ns_render_and_ns_export_work_on_the_run(capture_run, tmp_path):
    """What users do with a trained capture next: render its held-out views and export a point cloud."""
    run, _ = capture_run
    config = str(run / "config.yml")
    rendered = ns("ns-render", ["dataset", "--load-config", config, "--output-path", str(tmp_path / "renders"),
                                "--split", "test", "--rendered-output-names", "rgb"], tmp_path)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    frames = sorted(p for p in (tmp_path / "renders" / "test" / "rgb").rglob("*") if p.is_file())
    assert len(frames) == 2, frames  # the two held-out frames
    for frame in frames:
        with Image.open(frame) as img:
            assert img.size == (32, 32)

    # open3d, which ns-export imports, needs libusb-1.0: `make test` installs it (scripts/setup.sh --system).
    exported = ns("ns-export", ["pointcloud", "--load-config", config, "--output-dir", str(tmp_path / "export"),
                                "--num-points", "1000", "--remove-outliers", "False", "--normal-method", "open3d"],
                  tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    header = (tmp_path / "export" / "point_cloud.ply").read_bytes()[:400].decode("ascii", "replace")
    vertices = int(header.split("element vertex ")[1].split()[0])
    assert vertices >= 1000


@pytest.mark.parametrize("occlusion", [None, 0.1])
def test_the_crossview_prior_projects_the_pipelines_trained_rays_into_the_other_cameras(scene, occlusion):
    from evos_nerf.core.crossview import project
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config
    from evos_nerf.nerfstudio.datamanager import pinhole_views

    config = evos_nerf_blender_config()
    manager, model = config.pipeline.datamanager, config.pipeline.model
    manager.data, manager.train_num_rays_per_batch = scene, 64
    sampler = manager.pixel_sampler
    sampler.unvisited_prior, sampler.prior_block, sampler.init_interval, sampler.end_interval = "crossview", 8, 4, 4
    sampler.crossview_occlusion = occlusion
    model.num_nerf_samples_per_ray, model.num_proposal_samples_per_ray = 16, (24, 16)
    model.hidden_dim = model.hidden_dim_color = 32
    model.log2_hashmap_size, model.max_res = 12, 128
    pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)
    datamanager = pipeline.datamanager
    # The glue's cameras match the rays nerfstudio trains on: any point of a training ray projects back to its pixel.
    indices = torch.tensor([[0, 3, 5], [1, 20, 30], [2, 31, 0]])
    rays = datamanager.train_ray_generator(indices)
    rows, cols, inside = project(pinhole_views(datamanager.train_dataset.cameras), rays.origins + 3.0 * rays.directions)
    own = torch.arange(3), indices[:, 0]
    assert inside[own].all() and torch.equal(rows[own], indices[:, 1]) and torch.equal(cols[own], indices[:, 2])
    crossview = datamanager.selector.crossview
    for step in range(4):
        pipeline.get_train_loss_dict(step)
    assert float(crossview.counts.sum()) > 64  # three steps of rays, each seen by several other cameras
    datamanager.selector.maybe_evolve(4)  # the key iteration ranks with the evidence, which starts afresh
    assert float(crossview.counts.sum()) == 0 and datamanager.selector.pool is not None
    # With the occlusion test each camera's trained rays leave the depth of its surface behind.
    assert (int((crossview.surface > 0).sum()) > 0) == (occlusion is not None)


def test_rendering_leaves_the_proposal_networks_update_to_the_next_training_step(scene):
    """An evaluation or a viewer render between two training steps used to take the proposal networks'
    due update, so a run's training depended on when it was evaluated or watched."""
    from evos_nerf.nerfstudio.config import evos_nerf_blender_config

    config = evos_nerf_blender_config()
    config.pipeline.datamanager.data, config.pipeline.datamanager.train_num_rays_per_batch = scene, 64
    model = config.pipeline.model
    model.num_nerf_samples_per_ray, model.num_proposal_samples_per_ray = 16, (24, 16)
    model.hidden_dim = model.hidden_dim_color = 32
    model.log2_hashmap_size, model.max_res = 12, 128
    pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0)
    sampler = pipeline.model.proposal_sampler
    for step in (20, 21):  # two training callbacks since the last update: the next forward pass takes one
        sampler.step_cb(step)
    due = (sampler._step, sampler._steps_since_update)
    camera, batch = next(iter(pipeline.datamanager.fixed_indices_eval_dataloader))
    pipeline.eval()
    pipeline.model.get_outputs_for_camera(camera)  # what evaluation, the viewer and ns-render call
    pipeline.get_eval_image_metrics_and_images(step=21)
    assert (sampler._step, sampler._steps_since_update) == due
    pipeline.train()
    ray_bundle, _ = pipeline.datamanager.next_train(21)
    pipeline.model(ray_bundle)
    assert sampler._steps_since_update == 0  # the training step took it
