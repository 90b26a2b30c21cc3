"""The view-difference diagnostic on hand-built renders with known answers."""

import json

import numpy as np
import pytest

from script_modules import load_script


def photo(size=48, seed=0):
    """Left half flat grey, right half random texture: the two ends of the texture split."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 128, np.uint8)
    image[:, size // 2:] = rng.integers(0, 256, (size, size // 2, 3), dtype=np.uint8)
    return image


def test_the_ssim_map_averages_to_nerfactos_score_of_the_view():
    diff = load_script("view_diff")
    gt, rng = photo(), np.random.default_rng(1)
    noisy = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    score = diff.structural_similarity_index_measure(diff.to_tensor(gt), diff.to_tensor(noisy))
    assert diff.ssim_map(gt, noisy).mean() == pytest.approx(float(score), abs=1e-9)


def test_a_loss_in_the_flat_half_lands_in_the_flat_third_and_the_split_sums_to_the_total():
    diff = load_script("view_diff")
    gt = photo()
    depth = np.ones(gt.shape[:2], np.float16)
    rendered = np.clip(gt.astype(int) + np.random.default_rng(3).integers(-5, 6, gt.shape), 0, 255).astype(np.uint8)
    base = {"gt": gt, "rgb": rendered, "depth": depth}
    worse = rendered.copy()
    worse[:, :20] = np.clip(worse[:, :20].astype(int) + np.random.default_rng(2).integers(-30, 31, (48, 20, 3)), 0, 255)
    gap, delta = diff.view_gap(base, {"gt": gt, "rgb": worse, "depth": depth})
    assert gap.total < 0 and sum(gap.by_texture) == pytest.approx(gap.total)
    assert gap.by_texture[0] < 0.6 * gap.total  # most of it in the flat third (negative numbers)
    assert gap.by_texture[2] == pytest.approx(0.0, abs=1e-3)  # the textured half was rendered as before
    assert gap.depth_moved_share == 0.0 and gap.in_depth_moved == 0.0
    assert gap.error_change[0] > 0.5 and gap.error_change[2] == 0.0  # fitted worse where flat, as before elsewhere
    assert gap.flat_noise > 1.5  # and speckled there: the render's own spread where the photo is flat
    moved = {"gt": gt, "rgb": worse, "depth": np.where(np.arange(48) < 24, 2.0, 1.0)[None, :].repeat(48, 0).astype(np.float16)}
    gap, _ = diff.view_gap(base, moved)
    assert gap.depth_moved_share == pytest.approx(0.5)  # the left half moved
    assert gap.in_depth_moved == pytest.approx(gap.total, rel=0.05)  # where the loss is


def test_folders_are_grouped_by_scene_and_seed_and_a_missing_view_is_named(tmp_path):
    diff = load_script("view_diff")
    gt = photo()
    for strategy in ("uniform", "evos:step"):
        (tmp_path / f"fox_{strategy}_s3").mkdir()
        np.savez(tmp_path / f"fox_{strategy}_s3" / "view1.npz", rgb=gt, gt=gt, depth=np.ones((48, 48), np.float16))
    assert set(diff.find([tmp_path])[("fox", 3)]) == {"uniform", "evos:step"}
    with pytest.raises(SystemExit, match=r"--views 2: .*fox_uniform_s3 has views \[1\]"):
        diff.main(diff.Args(renders=[tmp_path], views=[2]))
    with pytest.raises(SystemExit, match="--renders: .*nowhere is not a folder"):
        diff.find([tmp_path / "nowhere"])


def test_each_held_out_frame_is_paired_with_its_nearest_training_camera(tmp_path):
    diff = load_script("view_diff")

    def pose(x, yaw_deg=0.0):
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        return [[c, 0, s, x], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]]

    # frames 0..4 one unit apart, listed out of order; every 2nd held out: 0, 2, 4
    frames = [{"file_path": f"images/{k:04d}.jpg", "transform_matrix": pose(float(k), 30.0 if k == 3 else 0.0)}
              for k in (3, 0, 4, 1, 2)]
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": frames}))
    rows = diff.held_out_neighbours(tmp_path / "transforms.json", eval_interval=2)
    assert [(r.frame, r.nearest, r.distance) for r in rows] == [("0000", "0001", 1.0), ("0002", "0001", 1.0), ("0004", "0003", 1.0)]
    assert rows[2].angle == pytest.approx(30.0) and rows[0].angle == pytest.approx(0.0)
    with pytest.raises(SystemExit, match="--capture: .*nothing.json is not a nerfstudio-data transforms.json"):
        diff.held_out_neighbours(tmp_path / "nothing.json")
