"""The procedural blender scene: layout, image content, determinism, and camera geometry."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evos_nerf.errors import UserInputError
from evos_nerf.scene import CAMERA_ANGLE_X, make_scene, trace_rays

RES = 32
COUNTS = {"train": 6, "val": 2, "test": 3}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "blender"
    returned = make_scene(out, resolution=RES, num_train=COUNTS["train"], num_val=COUNTS["val"],
                          num_test=COUNTS["test"], seed=0)
    assert returned == out
    return out


def load_meta(scene_dir: Path, split: str) -> dict:
    return json.loads((scene_dir / f"transforms_{split}.json").read_text())


def test_splits_and_images(scene_dir):
    for split, count in COUNTS.items():
        meta = load_meta(scene_dir, split)
        assert meta["camera_angle_x"] == pytest.approx(CAMERA_ANGLE_X)
        assert len(meta["frames"]) == count
        for i, frame in enumerate(meta["frames"]):
            assert frame["file_path"] == f"./{split}/r_{i}"
            assert np.asarray(frame["transform_matrix"]).shape == (4, 4)
            image = Image.open(scene_dir / f"{frame['file_path'][2:]}.png")
            assert image.mode == "RGBA" and image.size == (RES, RES)
            alpha = np.asarray(image)[..., 3]
            assert (alpha == 0).any() and (alpha == 255).any()  # background and object
        assert len(list((scene_dir / split).glob("*.png"))) == count


def test_views_differ_across_and_within_splits(scene_dir):
    positions = [np.asarray(f["transform_matrix"])[:3, 3]
                 for split in COUNTS for f in load_meta(scene_dir, split)["frames"]]
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(positions) for b in positions[i + 1:]]
    assert min(gaps) > 0.1
    first = np.asarray(Image.open(scene_dir / "train" / "r_0.png"), dtype=np.int16)
    second = np.asarray(Image.open(scene_dir / "train" / "r_1.png"), dtype=np.int16)
    assert np.abs(first - second).mean() > 5


def test_deterministic(scene_dir, tmp_path):
    again = make_scene(tmp_path / "again", resolution=RES, num_train=COUNTS["train"],
                       num_val=COUNTS["val"], num_test=COUNTS["test"], seed=0)
    for name in ("train/r_3.png", "test/r_1.png", "transforms_val.json"):
        assert (again / name).read_bytes() == (scene_dir / name).read_bytes()


def test_seed_changes_views(scene_dir, tmp_path):
    other = make_scene(tmp_path / "other", resolution=RES, num_train=2, num_val=1, num_test=1, seed=1)
    pose = lambda d: np.asarray(load_meta(d, "train")["frames"][0]["transform_matrix"])  # noqa: E731
    assert not np.allclose(pose(other), pose(scene_dir))


def test_cameras_follow_the_blender_conventions(scene_dir):
    for split in COUNTS:
        for frame in load_meta(scene_dir, split)["frames"]:
            pose = np.asarray(frame["transform_matrix"])
            rotation, position = pose[:3, :3], pose[:3, 3]
            np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
            assert np.linalg.det(rotation) == pytest.approx(1.0)
            np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
            assert np.linalg.norm(position) == pytest.approx(4.0)
            elevation = np.degrees(np.arcsin(position[2] / 4.0))
            assert 14.0 <= elevation <= 61.0
            # OpenGL axes: the camera looks down -Z (towards the origin), +Y up is world-up-ish.
            np.testing.assert_allclose(-rotation[:, 2], -position / 4.0, atol=1e-9)
            assert rotation[2, 1] > 0 and abs(rotation[2, 0]) < 1e-9


def test_origin_projects_to_the_image_centre_and_is_covered(scene_dir):
    focal = 0.5 * RES / np.tan(0.5 * CAMERA_ANGLE_X)
    for split in COUNTS:
        for frame in load_meta(scene_dir, split)["frames"]:
            pose = np.asarray(frame["transform_matrix"])
            world_to_cam = np.linalg.inv(pose)
            x, y, z = (world_to_cam @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
            assert z < 0  # in front of an OpenGL camera
            u, v = RES / 2 + focal * x / -z, RES / 2 - focal * y / -z
            assert abs(u - RES / 2) <= 1 and abs(v - RES / 2) <= 1
            alpha = np.asarray(Image.open(scene_dir / f"{frame['file_path'][2:]}.png"))[..., 3]
            assert alpha[RES // 2, RES // 2] > 0


def test_nerfstudio_blender_parser_reads_it(scene_dir):
    pytest.importorskip("nerfstudio")
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    parser = BlenderDataParserConfig(data=scene_dir).setup()
    for split, count in COUNTS.items():
        outputs = parser.get_dataparser_outputs(split=split)
        assert len(outputs.image_filenames) == count
        assert all(Path(f).is_file() for f in outputs.image_filenames)
        assert int(outputs.cameras.height[0]) == RES and int(outputs.cameras.width[0]) == RES


def test_images_match_nerfstudio_rays(scene_dir):
    """Re-render two training images from nerfstudio's own rays (2x2 per pixel, as the scene
    renders) and compare with the PNGs: catches flipped, transposed or shifted images."""
    pytest.importorskip("nerfstudio")
    import torch
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    outputs = BlenderDataParserConfig(data=scene_dir).setup().get_dataparser_outputs(split="train")
    sub = (torch.arange(2 * RES, dtype=torch.float32) + 0.5) / 2
    coords = torch.stack(torch.meshgrid(sub, sub, indexing="ij"), dim=-1)  # (row, column)
    for index, filename in enumerate(outputs.image_filenames[:2]):
        rays = outputs.cameras.generate_rays(camera_indices=index, coords=coords)
        origins = rays.origins.reshape(-1, 3).double().numpy()
        dirs = rays.directions.reshape(-1, 3).double().numpy()
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rgb, covered = trace_rays(origins, dirs)
        expected = np.concatenate([rgb * covered[:, None], covered[:, None]], axis=1)
        expected = expected.reshape(RES, 2, RES, 2, 4).mean(axis=(1, 3))  # premultiplied RGBA
        image = np.asarray(Image.open(filename), dtype=np.float64) / 255
        actual = np.concatenate([image[..., :3] * image[..., 3:], image[..., 3:]], axis=-1)
        off = np.abs(actual - expected).max(axis=-1) > 2 / 255
        assert off.mean() < 0.01, f"{filename.name}: {off.sum()} of {off.size} pixels differ"


@pytest.mark.parametrize("kwargs, needle", [
    ({"resolution": 4}, "resolution"),
    ({"num_train": 0}, "num_train"),
    ({"num_val": 0}, "num_val"),
    ({"num_test": -1}, "num_test"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, needle):
    with pytest.raises(UserInputError, match=needle):
        make_scene(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_cli(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "evos_nerf.scene", str(out), "--resolution", "16",
            "--num-train", "2", "--num-val", "1", "--num-test", "1"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(load_meta(out, "train")["frames"]) == 2
    assert Image.open(out / "val" / "r_0.png").size == (16, 16)

    proc = subprocess.run(args[:4] + ["--resolution", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert "resolution" in proc.stderr
