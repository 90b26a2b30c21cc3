"""`ns-train` / `ns-eval` / torchrun with bad input: every mistake a user can make ends with one
`error:` line that names the flag or file, before anything trains or is overwritten; a NaN never
trains to "success" and never reaches a checkpoint."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from nerf_helpers import as_nerfstudio_data, ns, train_args
from PIL import Image
from torch import nn

from evos_nerf import distributed
from evos_nerf.errors import CheckpointWriteError, NonFiniteLossError, UserInputError, install_excepthook, one_line
from evos_nerf.nerfstudio import trainer as trainer_module
from evos_nerf.nerfstudio.evos_checkpoint import read_state
from evos_nerf.nerfstudio.data_checks import check_scene
from evos_nerf.scene import make_scene

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("scene") / "tiny", resolution=32, num_train=8, num_val=2, num_test=2)


def copy_of(scene: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(scene, copy)
    return copy


def edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))  # NaN / Infinity are written as JSON's NaN / Infinity, as json.loads reads them


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def blender_parser(data: Path):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    return BlenderDataParserConfig(data=data)


def nerfstudio_parser(data: Path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=data, eval_mode="interval", eval_interval=8, downscale_factor=1)


def refused(parser, data: Path, splits=("train", "val")) -> str:
    with pytest.raises(UserInputError) as info:
        check_scene(parser, data, list(splits))
    return str(info.value)


# -- scene checks (check_scene runs before any nerfstudio parser) -------------------------------
def test_the_good_scene_passes_in_both_formats(scene, tmp_path):
    check_scene(blender_parser(scene), scene, ["train", "val"])
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    check_scene(nerfstudio_parser(capture), capture, ["train", "val"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_blender_pose_is_refused_naming_the_frame(scene, tmp_path, bad):
    broken = copy_of(scene, tmp_path)
    edit_json(broken / "transforms_train.json", lambda m: m["frames"][3]["transform_matrix"][1].__setitem__(2, bad))
    message = refused(blender_parser(broken), broken)
    assert "transforms_train.json frame 3 (./train/r_3)" in message
    assert "transform_matrix holds" in message


def test_a_non_finite_capture_pose_is_refused_naming_the_frame(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m["frames"][5]["transform_matrix"][0].__setitem__(3, float("nan")))
    message = refused(nerfstudio_parser(capture), capture)
    assert "transforms.json frame 5 (train/r_5.png)" in message and "nan" in message


def test_a_missing_camera_angle_x_is_named(scene, tmp_path):
    broken = copy_of(scene, tmp_path)
    edit_json(broken / "transforms_val.json", lambda m: m.pop("camera_angle_x"))
    assert "transforms_val.json has no camera_angle_x" in refused(blender_parser(broken), broken)


def test_a_frame_without_file_path_is_named_in_both_formats(scene, tmp_path):
    broken = copy_of(scene, tmp_path)
    edit_json(broken / "transforms_train.json", lambda m: m["frames"][2].pop("file_path"))
    assert "transforms_train.json frame 2 has no file_path" in refused(blender_parser(broken), broken)
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m["frames"][7].pop("file_path"))
    assert "transforms.json frame 7 has no file_path" in refused(nerfstudio_parser(capture), capture)


def test_a_capture_frame_whose_image_is_missing_is_named(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    (capture / "train" / "r_6.png").unlink()  # 10 frames in transforms.json, 9 images on disk
    message = refused(nerfstudio_parser(capture), capture)
    assert "transforms.json frame 6 (train/r_6.png)" in message and "does not exist" in message


def test_a_capture_frame_without_intrinsics_is_named(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m.pop("fl_y"))
    assert "frame 0 (train/r_0.png) has no fl_y" in refused(nerfstudio_parser(capture), capture)


def test_a_truncated_training_png_is_named(scene, tmp_path):
    broken = copy_of(scene, tmp_path)
    truncate(broken / "train" / "r_4.png")
    message = refused(blender_parser(broken), broken)
    assert f"cannot read image {broken / 'train' / 'r_4.png'}" in message and "truncated" in message


def test_a_png_that_the_loader_can_decode_is_not_refused(scene, tmp_path):
    """PIL's strict verify() rejects a PNG without its IEND chunk; the loader reads it, so do we."""
    broken = copy_of(scene, tmp_path)
    image = broken / "train" / "r_4.png"
    image.write_bytes(image.read_bytes()[:-5])
    with Image.open(image) as img:
        img.load()
    check_scene(blender_parser(broken), broken, ["train", "val"])


def test_a_singular_pose_is_refused_in_both_formats(scene, tmp_path):
    """A zero or placeholder matrix is finite, so only its rotation gives it away (it trained silently)."""
    broken = copy_of(scene, tmp_path)
    edit_json(broken / "transforms_train.json", lambda m: m["frames"][2].__setitem__("transform_matrix", [[0.0] * 4] * 4))
    assert "frame 2 (./train/r_2): transform_matrix's rotation is singular" in refused(blender_parser(broken), broken)
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: [m["frames"][4]["transform_matrix"][r].__setitem__(0, 0.0) for r in range(3)])
    assert "frame 4 (train/r_4.png): transform_matrix's rotation is singular" in refused(nerfstudio_parser(capture), capture)
    small = as_nerfstudio_data(scene, tmp_path / "small")  # a rotation scaled by 0.01 is still three axes
    edit_json(small / "transforms.json", lambda m: [m["frames"][4]["transform_matrix"][r].__setitem__(c, 0.01 * v)
                                                    for r in range(3) for c, v in enumerate(m["frames"][4]["transform_matrix"][r][:3])])
    check_scene(nerfstudio_parser(small), small, ["train", "val"])


@pytest.mark.parametrize("mode", ["P", "I;16", "LA"])
def test_an_image_the_loader_would_misread_is_refused(scene, tmp_path, mode):
    """nerfstudio reads np.array(image, uint8): palette indices, the low byte of 16-bit data, two channels."""
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    image = capture / "train" / "r_3.png"
    with Image.open(image) as img:
        rgb = img.convert("RGB")
    (rgb.convert("P") if mode == "P" else rgb.convert("L").convert(mode) if mode != "LA" else rgb.convert("LA")).save(image)
    message = refused(nerfstudio_parser(capture), capture)
    assert f"frame 3 (train/r_3.png): image {image} has PIL mode {mode}" in message and "convert it to RGB" in message


def test_grayscale_and_rgb_images_pass(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    for name, mode in (("r_1.png", "L"), ("r_2.png", "RGB")):
        with Image.open(capture / "train" / name) as img:
            img.convert(mode).save(capture / "train" / name)
    check_scene(nerfstudio_parser(capture), capture, ["train", "val"])


def test_an_image_that_is_not_its_cameras_size_is_named(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m.update(w=24))
    message = refused(nerfstudio_parser(capture), capture)
    assert "frame 0 (train/r_0.png): image" in message and "is 32x32 but its camera is 24x32" in message
    capture = as_nerfstudio_data(scene, tmp_path / "per_frame")
    with Image.open(capture / "train" / "r_2.png") as img:
        img.resize((24, 24)).save(capture / "train" / "r_2.png")
    assert "frame 2 (train/r_2.png): image" in refused(nerfstudio_parser(capture), capture)


@pytest.mark.parametrize("key, value, expected", [
    ("fl_x", 0, "fl_x must be > 0, got 0"),
    ("w", -32, "w must be > 0, got -32"),
    ("k1", float("nan"), "distortion coefficient k1 must be a finite number, got nan"),
    ("camera_model", "PINHOLEX", "unknown camera_model 'PINHOLEX'"),
])
def test_bad_intrinsics_are_named(scene, tmp_path, key, value, expected):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m.update({key: value}))
    assert expected in refused(nerfstudio_parser(capture), capture)


def test_a_mask_that_is_corrupt_or_not_its_images_size_is_named(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    (capture / "masks").mkdir()
    for index in range(10):
        Image.new("L", (32, 32), 255).save(capture / "masks" / f"m{index}.png")
    edit_json(capture / "transforms.json", lambda m: [f.update(mask_path=f"masks/m{i}.png") for i, f in enumerate(m["frames"])])
    check_scene(nerfstudio_parser(capture), capture, ["train", "val"])
    Image.new("L", (16, 16), 255).save(capture / "masks" / "m5.png")
    assert f"mask {capture / 'masks' / 'm5.png'} is not the size of its image (32x32)" in refused(nerfstudio_parser(capture), capture)
    Image.new("RGB", (32, 32)).save(capture / "masks" / "m5.png")
    assert "has PIL mode RGB: nerfstudio reads masks with one channel" in refused(nerfstudio_parser(capture), capture)
    truncate(capture / "masks" / "m5.png", keep=0.3)
    assert f"cannot read mask {capture / 'masks' / 'm5.png'}" in refused(nerfstudio_parser(capture), capture)


def test_split_lists_must_name_frames(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: m.update(train_filenames=["train/r_0.png", "train/gone.png"],
                                                               val_filenames=["val/r_0.png"], test_filenames=[]))
    assert "train_filenames names 'train/gone.png', which is not a frame's file_path" in refused(nerfstudio_parser(capture), capture)
    edit_json(capture / "transforms.json", lambda m: m.pop("train_filenames"))
    assert "lists val_filenames, test_filenames but no train_filenames" in refused(nerfstudio_parser(capture), capture)
    edit_json(capture / "transforms.json", lambda m: m.update(train_filenames=["train/r_0.png"], val_filenames=[]) or m.pop("val_filenames"))
    assert "no val_filenames, which this run loads" in refused(nerfstudio_parser(capture), capture)
    check_scene(nerfstudio_parser(capture), capture, ["train", "test"])  # what ns-eval loads is listed


def test_cameras_at_one_point_and_an_empty_train_split_are_refused(scene, tmp_path):
    capture = as_nerfstudio_data(scene, tmp_path / "capture")
    edit_json(capture / "transforms.json", lambda m: [f["transform_matrix"][r].__setitem__(3, 0.0) for f in m["frames"] for r in range(3)])
    assert "all 10 cameras sit at one position" in refused(nerfstudio_parser(capture), capture)
    single = as_nerfstudio_data(scene, tmp_path / "single")
    edit_json(single / "transforms.json", lambda m: m.update(frames=m["frames"][:1]))
    assert "transforms.json has one frame" in refused(nerfstudio_parser(single), single)
    few = as_nerfstudio_data(scene, tmp_path / "few")  # two frames, the first held out under every-8th
    edit_json(few / "transforms.json", lambda m: m.update(frames=m["frames"][:2]))
    check_scene(nerfstudio_parser(few), few, ["train", "val"])
    parser = nerfstudio_parser(few)
    parser.eval_mode, parser.train_split_fraction = "fraction", 0.0
    assert "the train split is empty (2 frame(s) under --pipeline.datamanager.dataparser.eval-mode fraction)" in refused(parser, few)


@pytest.mark.parametrize("flag, value, expected", [
    ("eval_num_rays_per_batch", 0, "--pipeline.datamanager.eval-num-rays-per-batch must be >= 1, got 0"),
    ("camera_res_scale_factor", 0.0, "--pipeline.datamanager.camera-res-scale-factor must be a finite number > 0, got 0.0"),
    ("camera_res_scale_factor", float("nan"), "camera-res-scale-factor must be a finite number > 0, got nan"),
])
def test_datamanager_flags_that_fail_later_are_refused_up_front(scene, tmp_path, flag, value, expected):
    config = config_for(scene, tmp_path / "out", 5)
    setattr(config.pipeline.datamanager, flag, value)
    with pytest.raises(UserInputError, match=re.escape(expected)):
        config.save_config()
    assert not (config.get_base_dir() / "config.yml").exists()


def test_a_finished_run_is_never_trained_over(scene, tmp_path):
    """ns-train writes config.yml first and keeps only the latest checkpoint: a re-run into the same
    folder would replace a finished run's config (even when it then fails) and delete its checkpoints."""
    config = config_for(scene, tmp_path / "out", 5)
    config.save_config()
    folder = config.get_checkpoint_dir()
    folder.mkdir(parents=True)
    (folder / "step-000000004.ckpt").write_bytes(b"a finished run")
    before = (config.get_base_dir() / "config.yml").read_bytes()
    again = config_for(scene, tmp_path / "out", 5)
    with pytest.raises(UserInputError, match="already holds a trained run \\(step-000000004.ckpt\\)"):
        again.save_config()
    broken = config_for(tmp_path / "missing", tmp_path / "out", 5)
    with pytest.raises(UserInputError, match="scene not found"):
        broken.save_config()
    assert (config.get_base_dir() / "config.yml").read_bytes() == before
    resume = config_for(scene, tmp_path / "out", 5, load_dir=folder)
    resume.save_config()  # continuing that run in place is what --load-dir is for


def test_more_ranks_than_training_images_is_refused_before_sharding(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "get_world_size", lambda: 9)
    message = refused(blender_parser(scene), scene)
    assert "8 training image(s) cannot be sharded over 9 ranks" in message
    capture = as_nerfstudio_data(scene, tmp_path / "capture")  # 10 frames, every 8th held out: 8 train
    assert "8 training image(s) cannot be sharded over 9 ranks" in refused(nerfstudio_parser(capture), capture)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 8)
    check_scene(nerfstudio_parser(capture), capture, ["train", "val"])


# -- trainer flags and checkpoints ----------------------------------------------------------------
def config_for(scene: Path, out: Path, steps: int, **trainer_flags):
    from evos_nerf.nerfstudio.presets import Budget, run_config

    model = {"num_nerf_samples_per_ray": 16, "num_proposal_samples_per_ray": (24, 16), "log2_hashmap_size": 12,
             "max_res": 128, "hidden_dim": 32, "hidden_dim_color": 32, "eval_num_rays_per_chunk": 2048}
    config = run_config(scene, out, Budget(steps=steps, rays=128, model=model), "evos", seed=0, experiment="tiny")
    sampler = config.pipeline.datamanager.pixel_sampler
    sampler.init_interval, sampler.end_interval, sampler.refresh_budget = 4, 2, 128
    config.logging.local_writer.enable = False
    for key, value in trainer_flags.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize("iterations", [0, -5])
def test_zero_or_negative_iterations_are_refused_before_loading_data(tmp_path, iterations):
    config = config_for(tmp_path / "no-scene-needed", tmp_path / "out", 10, max_num_iterations=iterations)
    with pytest.raises(UserInputError, match=f"--max-num-iterations must be >= 1, got {iterations}"):
        config.setup(local_rank=0, world_size=1)
    assert not (tmp_path / "out").exists()  # nothing written: the step-0 checkpoint of the old crash


def test_zero_iterations_are_allowed_when_resuming(tmp_path):
    folder = tmp_path / "nerfstudio_models"
    folder.mkdir()
    (folder / "step-000000009.ckpt").write_bytes(b"not read until setup")
    config = config_for(tmp_path, tmp_path / "out", 10, max_num_iterations=0, load_dir=folder)
    assert config.setup(local_rank=0, world_size=1).resume_from == folder / "step-000000009.ckpt"


def test_load_dir_that_is_missing_empty_or_not_a_checkpoint_folder_is_named(tmp_path):
    resolve = trainer_module.resolve_checkpoint
    with pytest.raises(UserInputError, match="--load-dir .*nope does not exist"):
        resolve(tmp_path / "nope", None, None)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserInputError, match="file.txt is not a folder"):
        resolve(tmp_path / "file.txt", None, None)
    run = tmp_path / "run"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "config.yml").write_text("x")
    with pytest.raises(UserInputError, match=r"holds no step-NNNNNNNNN.ckpt checkpoint: did you mean --load-dir .*run/nerfstudio_models\?"):
        resolve(run, None, None)  # the run folder instead of its nerfstudio_models
    with pytest.raises(UserInputError, match="holds no step-NNNNNNNNN.ckpt checkpoint: point it at"):
        resolve(run / "nerfstudio_models", None, None)
    for step in (10, 30, 20):
        (run / "nerfstudio_models" / f"step-{step:09d}.ckpt").write_bytes(b"")
    (run / "nerfstudio_models" / "notes.txt").write_text("upstream's int() parse of every name would crash on this")
    assert resolve(run / "nerfstudio_models", None, None).name == "step-000000030.ckpt"
    assert resolve(run / "nerfstudio_models", 20, None).name == "step-000000020.ckpt"
    with pytest.raises(UserInputError, match=r"--load-step 25: .* has no step-000000025.ckpt \(it has step\(s\) 10, 20, 30\)"):
        resolve(run / "nerfstudio_models", 25, None)
    with pytest.raises(UserInputError, match="--load-checkpoint .*missing.ckpt is not a file"):
        resolve(None, None, tmp_path / "missing.ckpt")


def test_a_truncated_or_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "step-000000009.ckpt"
    torch.save({"step": 9, "pipeline": {"w": torch.ones(4096)}, "optimizers": {}, "scalers": {}}, path)
    assert trainer_module.read_checkpoint(path)["step"] == 9
    truncate(path)
    with pytest.raises(UserInputError, match=f"cannot read checkpoint {path}: .*truncated or not a nerfstudio checkpoint"):
        trainer_module.read_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(UserInputError, match=f"cannot read checkpoint {path}"):
        trainer_module.read_checkpoint(path)
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(UserInputError, match="is not a nerfstudio checkpoint \\(no step, pipeline, optimizers, scalers\\)"):
        trainer_module.read_checkpoint(path)


class _Pipeline(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Linear(3, 2)
        self.datamanager = SimpleNamespace()


def saving_trainer(run: Path, only_latest: bool = True):
    """An EvosTrainer with just what saving needs (a real one takes seconds to set up)."""
    trainer = trainer_module.EvosTrainer.__new__(trainer_module.EvosTrainer)
    trainer.pipeline = _Pipeline()
    trainer.optimizers = SimpleNamespace(optimizers={"fields": torch.optim.Adam(trainer.pipeline.model.parameters())},
                                         schedulers={})
    trainer.grad_scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer.config = SimpleNamespace(save_only_latest_checkpoint=only_latest)
    trainer.base_dir = run
    trainer.checkpoint_dir = run / "nerfstudio_models"
    return trainer


def files(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def test_saves_keep_only_the_latest_checkpoint_unless_told_otherwise(tmp_path):
    trainer = saving_trainer(tmp_path / "run")
    trainer.save_checkpoint(4)
    trainer.save_checkpoint(9)
    assert files(trainer.checkpoint_dir) == ["step-000000009.ckpt"]
    state = torch.load(trainer.checkpoint_dir / "step-000000009.ckpt", weights_only=False)
    assert state["step"] == 9 and set(state) == {"step", "pipeline", "optimizers", "schedulers", "scalers"}
    keeper = saving_trainer(tmp_path / "all", only_latest=False)
    keeper.save_checkpoint(4)
    keeper.save_checkpoint(9)
    assert files(keeper.checkpoint_dir) == ["step-000000004.ckpt", "step-000000009.ckpt"]


def test_save_does_not_patch_torch_save_for_the_whole_process(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "save", lambda obj, path: (seen.append(torch.save), Path(path).write_bytes(b"x")))
    saving_trainer(tmp_path / "run").save_checkpoint(1)
    assert seen and all(fn is not trainer_module.atomic_torch_save for fn in seen)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:783] . unexpected pos 1664 vs 1558")])
def test_a_disk_full_save_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    trainer = saving_trainer(tmp_path / "run")
    trainer.save_checkpoint(4)
    good = (trainer.checkpoint_dir / "step-000000004.ckpt").read_bytes()

    def full_disk(obj, path):
        Path(path).write_bytes(b"half")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as info:
        trainer.save_checkpoint(9)
    message = one_line(info.value)
    assert f"could not write checkpoint {trainer.checkpoint_dir / 'step-000000009.ckpt'}: no space left on device" in message
    assert "the previous checkpoint" in message and "step-000000004.ckpt is kept" in message
    assert files(trainer.checkpoint_dir) == ["step-000000004.ckpt"]
    assert (trainer.checkpoint_dir / "step-000000004.ckpt").read_bytes() == good
    assert files(tmp_path / "run") == ["nerfstudio_models"]  # the temporary is gone


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer = saving_trainer(tmp_path / "run")
    trainer.save_checkpoint(4)
    with torch.no_grad():
        trainer.pipeline.model.weight[0, 0] = float("nan")
    expected = "model weights are not finite at step 9 \\(weight\\): step-000000009.ckpt was not written"
    with pytest.raises(NonFiniteLossError, match=expected):
        trainer.save_checkpoint(9)
    assert files(trainer.checkpoint_dir) == ["step-000000004.ckpt"]


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start_and_save(tmp_path):
    trainer = saving_trainer(tmp_path / "run")
    trainer.checkpoint_dir.mkdir(parents=True)
    leftovers = [tmp_path / "run" / ".step-000000004.ckpt.k3j2h1.tmp.ckpt",
                 trainer.checkpoint_dir / ".step-000000002.ckpt.zz9.tmp.ckpt"]  # older versions wrote here
    for leftover in leftovers:
        leftover.write_bytes(b"half a checkpoint")
    (tmp_path / "run" / "config.yml").write_text("kept")
    trainer._remove_temporaries()  # what setup() does first
    assert files(tmp_path / "run") == ["config.yml", "nerfstudio_models"]
    assert files(trainer.checkpoint_dir) == []
    leftovers[0].write_bytes(b"killed again")
    trainer.save_checkpoint(5)
    assert files(tmp_path / "run") == ["config.yml", "nerfstudio_models"]


def test_a_non_finite_loss_names_the_step_and_the_loss():
    from evos_nerf.nerfstudio.pipeline import check_finite_losses

    check_finite_losses({"rgb_loss": torch.tensor(0.5), "interlevel_loss": torch.tensor(0.1)}, 3)
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 17 \(rgb_loss = nan, interlevel_loss = 0.1\)"):
        check_finite_losses({"rgb_loss": torch.tensor(float("nan")), "interlevel_loss": torch.tensor(0.1)}, 17)
    with pytest.raises(NonFiniteLossError, match="interlevel_loss = inf"):
        check_finite_losses({"rgb_loss": torch.tensor(0.5), "interlevel_loss": torch.tensor(float("inf"))}, 2)


# -- what the user sees ---------------------------------------------------------------------------
def test_the_excepthook_prints_plugin_errors_as_one_line_and_keeps_other_tracebacks(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))
    install_excepthook()
    install_excepthook()  # idempotent
    for err in (UserInputError("--load-dir x does not exist"), NonFiniteLossError("loss nan\nat step 3"),
                CheckpointWriteError("could not write checkpoint y")):
        sys.excepthook(type(err), err, None)
    bug = KeyError("step")
    sys.excepthook(KeyError, bug, None)
    assert capsys.readouterr().err.splitlines() == [
        "error: --load-dir x does not exist", "error: loss nan at step 3", "error: could not write checkpoint y"]
    assert seen == [bug]


@pytest.mark.parametrize("where", ["missing/config.yml", "."])
def test_a_load_config_ns_eval_cannot_open_is_named(tmp_path, where):
    """Upstream eval_setup reads --load-config with Path.read_text: a missing file or a folder was a traceback."""
    from nerfstudio.utils.eval_utils import eval_setup

    path = tmp_path / where
    with pytest.raises(OSError) as info:
        eval_setup(path)
    assert one_line(info.value).startswith(f"cannot read --load-config {path}: ")
    other = FileNotFoundError(2, "No such file or directory", str(path))  # the same error raised elsewhere: a bug
    assert one_line(other) is None


def test_a_checkpoint_torch_load_cannot_read_is_named(tmp_path):
    """ns-eval's upstream loader calls torch.load without naming the file; the message does."""
    path = tmp_path / "step-000000003.ckpt"
    torch.save({"w": torch.ones(1000)}, path)
    truncate(path)
    with pytest.raises(RuntimeError) as info:
        torch.load(path, map_location="cpu")
    assert one_line(info.value).startswith(f"cannot read checkpoint {path}: PytorchStreamReader failed")
    assert one_line(RuntimeError("an unrelated bug")) is None


# -- end to end: training ---------------------------------------------------------------------
@pytest.fixture
def fresh_writers():
    """nerfstudio's event writers are module globals: give each in-process run its own."""
    from evos_nerf.nerfstudio.evos_logging import reset_writers

    yield
    reset_writers()


def train(config):
    from nerfstudio.scripts.train import train_loop

    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_checkpoint_dir()


@pytest.mark.slow
def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(scene, tmp_path, monkeypatch, fresh_writers):
    from evos_nerf.nerfstudio.model import EvosNerfactoModel

    original, calls = EvosNerfactoModel.training_losses, []

    def diverges_at_step_6(self, *args, **kwargs):
        loss_dict, errors = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) > 6:
            loss_dict["rgb_loss"] = loss_dict["rgb_loss"] * float("nan")
        return loss_dict, errors

    monkeypatch.setattr(EvosNerfactoModel, "training_losses", diverges_at_step_6)
    config = config_for(scene, tmp_path / "out", 20, steps_per_save=4)
    with pytest.raises(NonFiniteLossError) as info:
        train(config)
    message = one_line(info.value)
    assert "training loss is not finite at step 6 (rgb_loss = nan" in message
    folder = config.get_checkpoint_dir()
    assert f"nothing was saved after the last good checkpoint, {folder / 'step-000000004.ckpt'}" in message
    assert files(folder) == ["step-000000004.ckpt"]
    state = torch.load(folder / "step-000000004.ckpt", map_location="cpu", weights_only=False)["pipeline"]
    weights = [v for k, v in state.items() if k.startswith("_model.") and torch.is_tensor(v) and v.is_floating_point()]
    assert weights and all(torch.isfinite(w).all() for w in weights)


@pytest.mark.slow
def test_resume_with_new_ratios_uses_them_and_says_so_and_a_foreign_checkpoint_is_refused(scene, tmp_path, capfd, fresh_writers):
    first = config_for(scene, tmp_path / "out", 8)
    folder = train(first)
    capfd.readouterr()
    resumed = config_for(scene, tmp_path / "out", 6, load_dir=folder)
    sampler = resumed.pipeline.datamanager.pixel_sampler
    sampler.ratio, sampler.mutation = 0.3, 0.2  # --pipeline.datamanager.pixel-sampler.ratio 0.3 / .mutation 0.2
    train(resumed)
    printed = " ".join(capfd.readouterr().out.split())
    # evos-nerf-blender's r0 = 1/3 and alpha = 1/4, printed to six digits
    assert "the checkpoint's controls (ratio 0.333333, mutation 0.25, paused False) differ from this run's " \
           "(ratio 0.3, mutation 0.2, paused False); resuming with this run's" in printed
    (saved,) = folder.glob("step-*.ckpt")
    assert saved.name == "step-000000013.ckpt"
    evos = read_state(folder.parent / "evos_state" / "step-000000013")
    assert evos["selector/controls"].tolist()[:2] == pytest.approx([0.3, 0.2])
    assert evos["selector/schedule"].tolist()[0] == pytest.approx(0.3)  # the pool was re-ranked at the new ratio

    # --max-num-iterations 0 with --load-dir re-saves the loaded step instead of a "step 0" over it.
    again = config_for(scene, tmp_path / "out", 0, load_dir=folder)
    train(again)
    assert files(folder) == ["step-000000013.ckpt"]
    assert torch.load(folder / "step-000000013.ckpt", map_location="cpu", weights_only=False)["step"] == 13
    assert files(folder.parent / "evos_state") == ["step-000000013"]
    assert int(read_state(folder.parent / "evos_state" / "step-000000013")["meta/step"][0]) == 13

    # --load-dir of a run on another scene: one line naming the checkpoint, not a state-dict dump.
    other = make_scene(tmp_path / "other", resolution=32, num_train=6, num_val=2, num_test=2)
    with pytest.raises(UserInputError) as info:
        train(config_for(other, tmp_path / "other_out", 4, load_dir=folder))
    assert f"checkpoint {folder / 'step-000000013.ckpt'} does not fit this run" in str(info.value)
    assert "size mismatch" in str(info.value)  # 8 training images' appearance embeddings, 6 here


# -- end to end: the console scripts ------------------------------------------------------------
def _truncated_checkpoint_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "old_run" / "nerfstudio_models"
    folder.mkdir(parents=True)
    (folder / "step-000000029.ckpt").write_bytes(b"PK\x03\x04 a checkpoint cut short by a full disk")
    return folder


def assert_one_error_line(out: subprocess.CompletedProcess, expected: str) -> None:
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], text[-3000:]


CASES = {
    "nan_pose": ("transforms_train.json frame 1 (./train/r_1): transform_matrix holds nan", []),
    "truncated_png": ("cannot read image", []),
    "zero_iterations": ("--max-num-iterations must be >= 1, got 0", ["--max-num-iterations", "0"]),
    "zero_rays": ("--pipeline.datamanager.train-num-rays-per-batch must be >= 1, got 0",
                  ["--pipeline.datamanager.train-num-rays-per-batch", "0"]),
    "truncated_checkpoint": ("cannot read checkpoint {ckpt}/step-000000029.ckpt", ["--load-dir", "{ckpt}"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_ns_train_reports_bad_input_as_one_line_without_a_traceback(scene, tmp_path, case):
    expected, extra = CASES[case]
    data = copy_of(scene, tmp_path)
    if case == "nan_pose":
        edit_json(data / "transforms_train.json", lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(0, float("nan")))
    elif case == "truncated_png":
        truncate(data / "train" / "r_5.png")
    names = {"ckpt": _truncated_checkpoint_folder(tmp_path)}
    expected = expected.format(**names)
    args = train_args(data, tmp_path / "out", 5)
    args += [a.format(**names) for a in extra]
    out = ns("ns-train", args, tmp_path, timeout=300)
    assert out.returncode != 0
    assert_one_error_line(out, expected)
    assert not list((tmp_path / "out").rglob("*.ckpt"))


@pytest.mark.slow
def test_ns_eval_names_a_truncated_checkpoint(scene, tmp_path):
    config = config_for(scene, tmp_path / "out", 10)
    config.save_config()  # what ns-train writes first
    folder = config.get_checkpoint_dir()
    folder.mkdir(parents=True)
    torch.save({"step": 9, "pipeline": {"w": torch.ones(10000)}}, folder / "step-000000009.ckpt")
    truncate(folder / "step-000000009.ckpt")
    out = ns("ns-eval", ["--load-config", str(config.get_base_dir() / "config.yml"), "--output-path",
                         str(tmp_path / "eval.json")], tmp_path, timeout=300)
    assert out.returncode != 0
    assert_one_error_line(out, f"error: cannot read checkpoint {folder / 'step-000000009.ckpt'}: ")


@pytest.mark.slow
def test_more_ranks_than_images_under_torchrun_shows_the_reason(tmp_path):
    scene = make_scene(tmp_path / "one", resolution=16, num_train=1, num_val=1, num_test=1)
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "evos_nerf.train", *train_args(scene, tmp_path / "out", 5)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    reason = "1 training image(s) cannot be sharded over 2 ranks"
    assert any(line.startswith("error: rank ") and reason in line for line in text.splitlines()), text[-3000:]
    # torchrun's own failure summary carries it too, instead of "To enable traceback see ...".
    summary = text[text.rfind("Root Cause"):]
    assert reason in summary, summary
    assert "[rank0]: Traceback" not in text and "[rank1]: Traceback" not in text
