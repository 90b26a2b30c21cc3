"""A small procedural NeRF-synthetic ("blender") scene, rendered analytically with numpy.

Why it exists: ``ns-train evos-nerf`` needs a default scene, and the tests need a real multi-view
dataset, without downloading the NeRF synthetic data (which may be unavailable offline). This
module writes one in the exact layout nerfstudio's ``blender-data`` dataparser reads::

    OUT_DIR/transforms_{train,val,test}.json   {"camera_angle_x": ..., "frames": [...]}
    OUT_DIR/{train,val,test}/r_<i>.png         RGBA, transparent background

Conventions are those of the NeRF synthetic dataset: camera-to-world matrices with OpenGL camera
axes (the camera looks down its -Z, +Y is up), world up +Z, cameras on a sphere of radius 4
looking at the origin from 15-60 degrees elevation, ``camera_angle_x`` of ``lego``. Everything
sits inside nerfstudio's blender scene box [-1.5, 1.5]^3, 2.7-5.3 units from every camera, so
near 2 / far 6 enclose it.

The content is deliberately textured (checkerboards, stripes, thin grid lines, hard shadows) so
that which pixels a sampler picks matters: a central checkered sphere (always at the image
centre), a striped box, a "beach ball" sphere and a checkered floor disc at z = -0.6. Lambertian
shading with one directional light plus ambient; 2x2 supersampling per pixel for smooth edges.

    python -m evos_nerf.scene data/evos-scene --resolution 100
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import tyro
from PIL import Image

from evos_nerf.errors import UserInputError

CAMERA_ANGLE_X = 0.6911112070083618  # lego's horizontal field of view, radians
CAMERA_RADIUS = 4.0
ELEVATION_RANGE_DEG = (15.0, 60.0)
SPLITS = ("train", "val", "test")

# Geometry, world coordinates (+Z up); box and ball rest on the floor, nothing interpenetrates.
# All of it lies within |p| <= 1.26 of the origin: 2.7-5.3 units from every camera, inside
# [-1.5, 1.5]^3.
# Sized so that every view frames the whole scene (nothing touches the image border) at the
# lego field of view: a floor lower or wider than this is cut off at the bottom edge.
SPHERE_CENTER = np.array([0.0, 0.0, 0.0])
SPHERE_RADIUS = 0.5
BALL_CENTER = np.array([-0.55, 0.5, -0.32])
BALL_RADIUS = 0.28
BOX_MIN = np.array([0.4, -0.7, -0.6])
BOX_MAX = np.array([0.8, -0.35, -0.15])
FLOOR_Z = -0.6
FLOOR_RADIUS = 1.1

LIGHT_DIR = np.array([0.45, 0.3, 1.0]) / np.linalg.norm([0.45, 0.3, 1.0])
AMBIENT = 0.3
DIFFUSE = 0.7
SUPERSAMPLE = 2  # per axis: 2x2 rays per pixel
_EPS = 1e-6
_CHUNK = 1 << 18  # rays per vectorised batch, bounds memory at large resolutions


# ----------------------------------------------------------------------------- cameras


def _look_at_origin(position: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL axes) for a camera at ``position`` looking at the origin."""
    z_axis = position / np.linalg.norm(position)  # camera looks down -Z, i.e. towards the origin
    x_axis = np.cross([0.0, 0.0, 1.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x_axis, y_axis, z_axis, position
    return pose


def camera_poses(num_views: int, seed: int = 0) -> np.ndarray:
    """``num_views`` distinct camera-to-world matrices, shape (N, 4, 4).

    A golden-angle (Fibonacci) spiral over the band of the radius-4 sphere between 15 and 60
    degrees elevation, uniform in area; the seed only rotates the spiral about +Z.
    """
    offset = np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi)
    golden_angle = math.pi * (3.0 - math.sqrt(5.0))
    lo, hi = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    poses = []
    for k in range(num_views):
        sin_el = lo + (k + 0.5) / num_views * (hi - lo)
        cos_el = math.sqrt(1.0 - sin_el * sin_el)
        azimuth = offset + k * golden_angle
        position = CAMERA_RADIUS * np.array([cos_el * math.cos(azimuth), cos_el * math.sin(azimuth), sin_el])
        poses.append(_look_at_origin(position))
    return np.stack(poses)


def split_indices(num_train: int, num_val: int, num_test: int, seed: int = 0) -> Dict[str, List[int]]:
    """Which spiral views go to which split: held-out views evenly spread along the spiral."""
    total = num_train + num_val + num_test
    held = num_val + num_test
    held_positions = [int((j + 0.5) * total / held) for j in range(held)]  # distinct: total/held > 1
    held_positions = [held_positions[i] for i in np.random.default_rng(seed + 1).permutation(held)]
    val, test = sorted(held_positions[:num_val]), sorted(held_positions[num_val:])
    train = sorted(set(range(total)) - set(held_positions))
    return {"train": train, "val": val, "test": test}


def focal_length(resolution: int) -> float:
    """Pinhole focal length in pixels, as nerfstudio derives it from ``camera_angle_x``."""
    return 0.5 * resolution / math.tan(0.5 * CAMERA_ANGLE_X)


# ----------------------------------------------------------------------------- intersections


def _hit_sphere(origins: np.ndarray, dirs: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Nearest positive hit distance along unit ``dirs`` (inf where missed)."""
    oc = origins - center
    b = np.einsum("ij,ij->i", oc, dirs)
    c = np.einsum("ij,ij->i", oc, oc) - radius * radius
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = -b - root
    t = np.where(t > _EPS, t, -b + root)  # origin inside the sphere (not for cameras): far root
    return np.where((disc >= 0.0) & (t > _EPS), t, np.inf)


def _hit_box(origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Slab test against the axis-aligned box: (hit distance or inf, index of the hit face's axis)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1 = (BOX_MIN - origins) * inv
        t2 = (BOX_MAX - origins) * inv
    t1 = np.nan_to_num(t1, nan=-np.inf)
    t2 = np.nan_to_num(t2, nan=np.inf)
    t_lo, t_hi = np.minimum(t1, t2), np.maximum(t1, t2)
    axis = np.argmax(t_lo, axis=1)
    t_near, t_far = t_lo.max(axis=1), t_hi.min(axis=1)
    hit = (t_near <= t_far) & (t_near > _EPS)
    return np.where(hit, t_near, np.inf), axis


def _hit_floor(origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (FLOOR_Z - origins[:, 2]) / dirs[:, 2]
    t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
    p = origins + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs
    inside = p[:, 0] ** 2 + p[:, 1] ** 2 <= FLOOR_RADIUS ** 2
    return np.where(inside, t, np.inf)


def _occluded(points: np.ndarray) -> np.ndarray:
    """True where the light is blocked (the floor cannot block: the light comes from above)."""
    dirs = np.broadcast_to(LIGHT_DIR, points.shape)
    t = np.minimum(_hit_sphere(points, dirs, SPHERE_CENTER, SPHERE_RADIUS),
                   _hit_sphere(points, dirs, BALL_CENTER, BALL_RADIUS))
    t = np.minimum(t, _hit_box(points, dirs)[0])
    return np.isfinite(t)


# ----------------------------------------------------------------------------- textures


def _spherical(n: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(longitude in [0, 1), colatitude in [0, 1]) of unit normals."""
    lon = (np.arctan2(n[:, 1], n[:, 0]) / (2.0 * math.pi)) % 1.0
    colat = np.arccos(np.clip(n[:, 2], -1.0, 1.0)) / math.pi
    return lon, colat


def _mix(mask: np.ndarray, a, b) -> np.ndarray:
    return np.where(mask[:, None], np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _near_line(x: np.ndarray, cells: float, width: float) -> np.ndarray:
    """True within ``width`` (fraction of a cell) of a cell boundary of ``x * cells``."""
    f = (x * cells) % 1.0
    return (f < width) | (f > 1.0 - width)


def _sphere_albedo(n: np.ndarray) -> np.ndarray:
    """Red / cream spherical checkerboard, 16 x 10 cells, with thin dark grid lines."""
    lon, colat = _spherical(n)
    checker = (np.floor(lon * 16).astype(int) + np.floor(colat * 10).astype(int)) % 2 == 0
    albedo = _mix(checker, [0.85, 0.15, 0.12], [0.95, 0.9, 0.75])
    lines = _near_line(lon, 16, 0.06) | _near_line(colat, 10, 0.06)
    return np.where(lines[:, None], 0.1, albedo)


def _ball_albedo(n: np.ndarray) -> np.ndarray:
    """Beach ball: six coloured gores in longitude, white caps, a fine dark band at the equator."""
    lon, colat = _spherical(n)
    gores = np.array([[0.95, 0.8, 0.1], [0.1, 0.45, 0.9], [0.15, 0.7, 0.25],
                      [0.9, 0.35, 0.1], [0.6, 0.2, 0.75], [0.1, 0.75, 0.8]])
    albedo = gores[np.floor(lon * 6).astype(int) % 6]
    caps = (colat < 0.15) | (colat > 0.85)
    albedo = np.where(caps[:, None], 0.97, albedo)
    band = np.abs(colat - 0.5) < 0.02
    return np.where(band[:, None], 0.05, albedo)


def _box_albedo(p: np.ndarray) -> np.ndarray:
    """Diagonal three-colour stripes (period 0.24) with a dark frame along the edges."""
    stripe = np.floor((p[:, 0] + p[:, 1] + p[:, 2]) / 0.08).astype(int) % 3
    palette = np.array([[0.12, 0.25, 0.75], [0.95, 0.8, 0.2], [0.95, 0.95, 0.95]])
    albedo = palette[stripe]
    near_edge = np.minimum(np.abs(p - BOX_MIN), np.abs(p - BOX_MAX)) < 0.025
    frame = near_edge.sum(axis=1) >= 2  # close to two faces at once: an edge
    return np.where(frame[:, None], 0.05, albedo)


def _floor_albedo(p: np.ndarray) -> np.ndarray:
    """Grey / white checkerboard (0.12 cells) with a teal ring near the rim."""
    cx = np.floor(p[:, 0] / 0.12).astype(int)
    cy = np.floor(p[:, 1] / 0.12).astype(int)
    albedo = _mix((cx + cy) % 2 == 0, [0.9, 0.9, 0.88], [0.35, 0.35, 0.4])
    r = np.hypot(p[:, 0], p[:, 1])
    ring = (r > 0.97) & (r < 1.03)
    return np.where(ring[:, None], np.array([0.1, 0.6, 0.6]), albedo)


# ----------------------------------------------------------------------------- rendering


def trace_rays(origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Colour (N, 3) and coverage (N,) of world-space rays with unit ``dirs``, origins outside
    the objects; colour is 0 (and coverage 0) where nothing is hit. Shaded, not anti-aliased."""
    t_sphere = _hit_sphere(origins, dirs, SPHERE_CENTER, SPHERE_RADIUS)
    t_ball = _hit_sphere(origins, dirs, BALL_CENTER, BALL_RADIUS)
    t_box, box_axis = _hit_box(origins, dirs)
    t_floor = _hit_floor(origins, dirs)
    ts = np.stack([t_sphere, t_ball, t_box, t_floor], axis=1)
    which = np.argmin(ts, axis=1)
    t = ts[np.arange(len(ts)), which]
    hit = np.isfinite(t)
    p = origins + np.where(hit, t, 0.0)[:, None] * dirs

    normals = np.zeros_like(p)
    albedo = np.zeros_like(p)
    sel = hit & (which == 0)
    normals[sel] = (p[sel] - SPHERE_CENTER) / SPHERE_RADIUS
    albedo[sel] = _sphere_albedo(normals[sel])
    sel = hit & (which == 1)
    normals[sel] = (p[sel] - BALL_CENTER) / BALL_RADIUS
    albedo[sel] = _ball_albedo(normals[sel])
    sel = hit & (which == 2)
    idx = np.nonzero(sel)[0]
    normals[idx, box_axis[idx]] = -np.sign(dirs[idx, box_axis[idx]])
    albedo[sel] = _box_albedo(p[sel])
    sel = hit & (which == 3)
    normals[sel] = [0.0, 0.0, 1.0]
    albedo[sel] = _floor_albedo(p[sel])

    lambert = np.clip(normals @ LIGHT_DIR, 0.0, None)
    lit = np.zeros(len(p), dtype=bool)
    lit[hit] = ~_occluded(p[hit] + 1e-4 * normals[hit])
    colour = albedo * (AMBIENT + DIFFUSE * lambert * lit)[:, None]
    colour[~hit] = 0.0
    return np.clip(colour, 0.0, 1.0), hit.astype(np.float64)


def render_view(pose: np.ndarray, resolution: int) -> np.ndarray:
    """RGBA float image (H, W, 4) in [0, 1] seen from camera-to-world ``pose``.

    2x2 rays per pixel; alpha is the covered fraction and RGB the mean over covered rays
    (straight, not premultiplied, alpha as PNG stores it), 0 where nothing is covered.
    """
    s = SUPERSAMPLE
    f = focal_length(resolution)
    c = resolution / 2.0
    sub = (np.arange(resolution * s) + 0.5) / s  # subpixel centres, pixel j spans [j, j + 1)
    u, v = np.meshgrid(sub, sub, indexing="xy")
    cam_dirs = np.stack([(u - c) / f, -(v - c) / f, -np.ones_like(u)], axis=-1).reshape(-1, 3)
    dirs = cam_dirs @ pose[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(pose[:3, 3], dirs.shape)

    colour = np.empty_like(dirs)
    cover = np.empty(len(dirs))
    for start in range(0, len(dirs), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        colour[chunk], cover[chunk] = trace_rays(origins[chunk], dirs[chunk])

    def pool(x: np.ndarray) -> np.ndarray:  # (H*s, W*s, C) -> (H, W, C) sum over each s x s block
        return x.reshape(resolution, s, resolution, s, -1).sum(axis=(1, 3))

    covered = pool(cover.reshape(resolution * s, resolution * s, 1))
    rgb_sum = pool(colour.reshape(resolution * s, resolution * s, 3))
    rgb = np.where(covered > 0, rgb_sum / np.maximum(covered, 1.0), 0.0)
    return np.concatenate([rgb, covered / (s * s)], axis=-1)


def _to_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="RGBA").save(path)


def _validate(resolution: int, counts: Dict[str, int], seed: int) -> None:
    def is_int(x) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(resolution) or resolution < 8:
        raise UserInputError(f"resolution must be an integer >= 8, got {resolution!r}")
    for name, count in counts.items():
        if not is_int(count) or count < 1:
            raise UserInputError(f"{name} must be an integer >= 1, got {count!r}")
    if not is_int(seed) or seed < 0:
        raise UserInputError(f"seed must be an integer >= 0, got {seed!r}")


def make_scene(out_dir: Path, resolution: int = 64, num_train: int = 24, num_val: int = 4,
               num_test: int = 4, seed: int = 0) -> Path:
    """Write the blender-format scene into ``out_dir`` (created if needed) and return it.

    Images first, the three ``transforms_*.json`` last: a folder with all three is complete.
    Deterministic: the same arguments give byte-identical files. The seed rotates the camera
    spiral and shuffles which held-out views are val or test; the scene content never changes.
    """
    counts = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    _validate(resolution, counts, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"output path {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # a half-rewritten folder must not look complete
        (out_dir / f"transforms_{split}.json").unlink(missing_ok=True)

    poses = camera_poses(num_train + num_val + num_test, seed)
    transforms = {}
    for split, indices in split_indices(num_train, num_val, num_test, seed).items():
        frames = []
        for i, view in enumerate(indices):
            file_path = f"./{split}/r_{i}"
            _to_png(render_view(poses[view], resolution), out_dir / f"{file_path[2:]}.png")
            frames.append({"file_path": file_path, "transform_matrix": poses[view].tolist()})
        transforms[split] = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
    for split in SPLITS:
        (out_dir / f"transforms_{split}.json").write_text(json.dumps(transforms[split], indent=2) + "\n")
    return out_dir


# ----------------------------------------------------------------------------- CLI


@dataclass
class SceneArgs:
    """Write the procedural blender-format scene (RGBA PNGs + transforms_*.json) to a folder."""

    out_dir: tyro.conf.Positional[Path]
    """Folder to write (created if needed; existing scene files are overwritten)."""
    resolution: int = 64
    """Image width and height in pixels (>= 8)."""
    num_train: int = 24
    num_val: int = 4
    num_test: int = 4
    seed: int = 0
    """Rotates the camera spiral and the val/test assignment; the objects never change."""


def entrypoint() -> None:
    args = tyro.cli(SceneArgs, prog="python -m evos_nerf.scene")
    try:
        out = make_scene(args.out_dir, args.resolution, args.num_train, args.num_val, args.num_test,
                         args.seed)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    total = args.num_train + args.num_val + args.num_test
    print(f"wrote {total} views at {args.resolution}x{args.resolution} to {out}")


if __name__ == "__main__":
    entrypoint()
