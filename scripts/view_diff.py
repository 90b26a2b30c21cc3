"""Where on a held-out view one sampler's render loses SSIM against uniform's.

Reads the renders ``bench_nerf.py --renders DIR`` keeps (``<scene>_<strategy>_s<seed>/view<N>.npz``:
render, photo and nerfacto's median depth at the last evaluation) and splits each sampler's SSIM difference
to uniform of the same seed by the photo's local texture and by where the two renders' depth
disagrees. A view's SSIM is the mean of a per-pixel map (nerfacto's torchmetrics SSIM, 11 px
Gaussian window), so the split adds up to the view's difference. A loss in the photo's flat third
is a smooth wall or table rendered worse: fitted worse (its squared error rose) or speckled (the
render's own spread there rose while its squared error did not); a loss where depth moved is
geometry.

    PYTHONPATH=. .venv/bin/python scripts/view_diff.py --renders /tmp/renders/s59 /tmp/renders/s60 \\
        --capture ../shared/data/fox --out benchmarks/diagnostics/fox_flat_s68
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import tyro
from rich.console import Console
from torchmetrics.functional.image import structural_similarity_index_measure

from evos_nerf.core.contrast import _blur as ssim_window_blur  # the SSIM window EVOS's SSIM prior uses

console = Console()
FOLDER = re.compile(r"^(?P<scene>[^_]+)_(?P<strategy>.+)_s(?P<seed>\d+)$")
DEPTH_MOVED = 0.1  # relative depth change counted as "geometry moved"


@dataclass
class Args:
    renders: List[Path]
    """Folders written by ``bench_nerf.py --renders`` (one per lock-step group)."""
    views: Optional[List[int]] = None
    """Held-out views to read (1-based, as the benchmark's per-view table numbers them); all if unset."""
    out: Optional[Path] = None
    """Where to write ``README``-ready tables (``view_diff.md``) and one PNG per (seed, view)."""
    baseline: str = "uniform"
    capture: Optional[Path] = None
    """The capture's folder (nerfstudio-data ``transforms.json``): also print how close each held-out
    view is to its nearest training camera, since a view next to a training frame is scored mostly on
    how well that frame was fitted, and one far from all of them on the scene's geometry."""
    eval_interval: int = 8


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0


def ssim_map(gt: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (channel mean) exactly as nerfacto scores a view (its argument order and data
    range; torchmetrics pads by reflection, so the map is the view's size and its mean the score)."""
    _, full = structural_similarity_index_measure(to_tensor(gt), to_tensor(rgb), return_full_image=True)
    return full[0].mean(0).numpy()


def local_std(gt: np.ndarray) -> np.ndarray:
    """The photo's luminance standard deviation in SSIM's own window: its texture as SSIM sees it."""
    luma = to_tensor(gt).mean(1)[0:1].float()  # [1, H, W]
    var = (ssim_window_blur(luma**2) - ssim_window_blur(luma) ** 2).clamp_min(0)
    return var.sqrt()[0].double().numpy()


def thirds(key: np.ndarray) -> np.ndarray:
    """0, 1, 2: the low, middle and high third of the pixels ranked by ``key``. By rank, not by
    value, so that a flat photo (many equal values) still splits into three equal parts (ties in
    reading order)."""
    ranks = np.empty(key.size, np.int64)
    ranks[np.argsort(key, axis=None, kind="stable")] = np.arange(key.size)
    return (ranks * 3 // key.size).reshape(key.shape)


def split_by_terciles(delta: np.ndarray, bands: np.ndarray) -> Tuple[float, float, float]:
    """Each third's share of ``delta``'s mean (``bands`` from :func:`thirds`), summing to delta.mean()."""
    return tuple(float(delta[bands == b].sum() / delta.size) for b in range(3))


@dataclass
class ViewGap:
    total: float
    """Sampler minus baseline SSIM over the view (the map's mean)."""
    by_texture: Tuple[float, float, float]
    """Shares of ``total`` in the photo's flat, middle and textured thirds."""
    depth_moved_share: float
    """Fraction of the view where the two renders' depth differs by more than 10%."""
    in_depth_moved: float
    """Share of ``total`` inside that region."""
    flat_noise: float
    """The render's own local spread (SSIM's window) in the photo's flat third over the baseline
    render's there: above 1, the sampler left speckle where the photo has none."""
    error_change: Tuple[float, float, float]
    """Squared error in the flat, middle and textured thirds relative to the baseline's there
    (+0.10: 10% more): whether a third lost SSIM because it was fitted worse, or because SSIM
    punishes the same error more where the photo is flat."""


def view_gap(baseline: Dict[str, np.ndarray], sampler: Dict[str, np.ndarray]) -> Tuple[ViewGap, np.ndarray]:
    """The gap and its per-pixel map (sampler minus baseline SSIM)."""
    delta = ssim_map(sampler["gt"], sampler["rgb"]) - ssim_map(baseline["gt"], baseline["rgb"])
    texture = local_std(baseline["gt"])
    d0, d1 = (v["depth"].astype(np.float64) for v in (baseline, sampler))
    moved = np.abs(d1 - d0) > DEPTH_MOVED * np.maximum(np.abs(d0), 1e-6)
    squared = lambda v: ((v["rgb"].astype(np.float64) - v["gt"].astype(np.float64)) ** 2).mean(-1)
    bands, mine, theirs = thirds(texture), squared(sampler), squared(baseline)
    change = tuple(float(mine[bands == b].mean() / theirs[bands == b].mean() - 1) if theirs[bands == b].any() else math.nan
                   for b in range(3))
    flat = bands == 0
    noise = float(local_std(sampler["rgb"])[flat].mean() / local_std(baseline["rgb"])[flat].mean())
    return ViewGap(float(delta.mean()), split_by_terciles(delta, bands), float(moved.mean()),
                   float(delta[moved].sum() / delta.size), noise, change), delta


def find(folders: List[Path]) -> Dict[Tuple[str, int], Dict[str, Path]]:
    """(scene, seed) -> strategy -> folder of its renders."""
    groups: Dict[Tuple[str, int], Dict[str, Path]] = {}
    for root in folders:
        if not root.is_dir():
            raise SystemExit(f"--renders: {root} is not a folder")
        for sub in sorted(root.iterdir()):
            m = FOLDER.match(sub.name)
            if m and sub.is_dir():
                groups.setdefault((m["scene"], int(m["seed"])), {})[m["strategy"]] = sub
    if not groups:
        raise SystemExit(f"--renders: no <scene>_<strategy>_s<seed> folders in {', '.join(map(str, folders))}")
    return groups


def load(folder: Path, view: int) -> Dict[str, np.ndarray]:
    path = folder / f"view{view}.npz"
    try:
        with np.load(path) as data:
            return {k: data[k] for k in ("rgb", "gt", "depth")}
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"{path}: not a render bench_nerf --renders wrote ({error})")


@dataclass
class Neighbour:
    frame: str
    nearest: str
    distance: float
    """To the nearest training camera, in units of the capture's median step between consecutive frames."""
    angle: float
    """Between the two cameras' viewing directions, degrees."""


def held_out_neighbours(transforms: Path, eval_interval: int = 8) -> List[Neighbour]:
    """Each held-out frame of nerfstudio-data's interval split (frames sorted by file name, every
    ``eval_interval``-th from the first held out, as ``get_train_eval_split_interval`` does) with its
    nearest training camera."""
    try:
        frames = sorted(json.loads(transforms.read_text())["frames"], key=lambda f: f["file_path"])
        poses = np.array([f["transform_matrix"] for f in frames], dtype=np.float64)[:, :3]
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"--capture: {transforms} is not a nerfstudio-data transforms.json ({error})")
    centres, looks = poses[:, :, 3], -poses[:, :, 2]
    step = float(np.median(np.linalg.norm(np.diff(centres, axis=0), axis=1)))
    held = [i for i in range(len(frames)) if i % eval_interval == 0]
    train = np.array([i for i in range(len(frames)) if i % eval_interval != 0])
    out = []
    for i in held:
        distances = np.linalg.norm(centres[train] - centres[i], axis=1)
        j = int(train[np.argmin(distances)])
        cosine = np.clip(looks[i] @ looks[j] / (np.linalg.norm(looks[i]) * np.linalg.norm(looks[j])), -1.0, 1.0)
        out.append(Neighbour(Path(frames[i]["file_path"]).stem, Path(frames[j]["file_path"]).stem,
                             float(distances.min() / step), float(np.degrees(np.arccos(cosine)))))
    return out


def figure(path: Path, title: str, baseline: Dict[str, np.ndarray], samplers: Dict[str, Dict[str, np.ndarray]],
           maps: Dict[str, np.ndarray]) -> None:
    """Top row: the photo and each render; bottom row: the photo's texture (what the thirds split
    by), uniform's own SSIM map, and each sampler's difference to it (blue: better than uniform)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 + len(samplers)
    height, width = baseline["gt"].shape[:2]
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 2 * 2.6 * height / width + 0.6), constrained_layout=True)
    top = [("photo", baseline["gt"]), ("uniform", baseline["rgb"])] + [(name, v["rgb"]) for name, v in samplers.items()]
    for ax, (label, image) in zip(axes[0], top):
        ax.imshow(image)
        ax.set_title(label, fontsize=8)
    axes[1][0].imshow(local_std(baseline["gt"]), cmap="gray")
    axes[1][0].set_title("photo's texture (local std)", fontsize=8)
    shown = axes[1][1].imshow(ssim_map(baseline["gt"], baseline["rgb"]), cmap="viridis", vmin=0, vmax=1)
    axes[1][1].set_title("uniform's SSIM", fontsize=8)
    fig.colorbar(shown, ax=axes[1][1], fraction=0.046)
    for ax, name in zip(axes[1][2:], samplers):
        shown = ax.imshow(maps[name], cmap="RdBu", vmin=-0.3, vmax=0.3)
        ax.set_title(f"{name} - uniform SSIM", fontsize=8)
        fig.colorbar(shown, ax=ax, fraction=0.046)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: Args) -> None:
    groups = find(args.renders)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    rows: Dict[Tuple[int, str], List[ViewGap]] = {}
    by_seed: Dict[Tuple[str, int, str], List[ViewGap]] = {}
    for (scene, seed), strategies in sorted(groups.items()):
        if args.baseline not in strategies:
            console.print(f"[yellow]{scene} seed {seed}: no {args.baseline} renders, skipped[/yellow]")
            continue
        available = sorted(int(p.stem[4:]) for p in strategies[args.baseline].glob("view*.npz"))
        for view in args.views or available:
            if view not in available:
                raise SystemExit(f"--views {view}: {strategies[args.baseline]} has views {available}")
            base = load(strategies[args.baseline], view)
            samplers = {name: load(folder, view) for name, folder in strategies.items() if name != args.baseline}
            maps = {}
            for name, rendered in samplers.items():
                gap, maps[name] = view_gap(base, rendered)
                rows.setdefault((view, name), []).append(gap)
                by_seed.setdefault((scene, seed, name), []).append(gap)
            if args.out is not None:
                figure(args.out / f"{scene}_s{seed}_view{view}.png", f"{scene} seed {seed}, held-out view {view}",
                       base, samplers, maps)
    lines = ["| view | sampler | seeds | ΔSSIM (below) | flat third | middle third | textured third | render noise where flat | squared error: flat / middle / textured | depth moved (share of view) | ΔSSIM there |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (view, name), gaps in sorted(rows.items()):
        lines.append(
            f"| {view} | {name} | {len(gaps)} | {statistics.mean(g.total for g in gaps):+.4f} ({sum(g.total < 0 for g in gaps)}) | "
            + " | ".join(f"{statistics.mean(g.by_texture[b] for g in gaps):+.4f}" for b in range(3))
            + f" | {statistics.mean(g.flat_noise for g in gaps):.3f}x | "
            + " / ".join(f"{statistics.mean(g.error_change[b] for g in gaps):+.1%}" for b in range(3))
            + f" | {statistics.mean(g.depth_moved_share for g in gaps):.2f} | {statistics.mean(g.in_depth_moved for g in gaps):+.4f} |")
    lines += ["", "Per seed, mean over the views read:", "",
              "| scene | seed | sampler | views | ΔSSIM | flat third | textured third | render noise where flat |",
              "|---|---|---|---|---|---|---|---|"]
    for (scene, seed, name), gaps in sorted(by_seed.items()):
        lines.append(f"| {scene} | {seed} | {name} | {len(gaps)} | {statistics.mean(g.total for g in gaps):+.4f} | "
                     f"{statistics.mean(g.by_texture[0] for g in gaps):+.4f} | {statistics.mean(g.by_texture[2] for g in gaps):+.4f} | "
                     f"{statistics.mean(g.flat_noise for g in gaps):.3f}x |")
    table = "\n".join(lines)
    if args.capture is not None:
        table += "\n\n| view | frame | nearest training frame | distance (median frame steps) | angle (deg) |\n|---|---|---|---|---|\n"
        table += "\n".join(f"| {k} | {n.frame} | {n.nearest} | {n.distance:.2f} | {n.angle:.1f} |"
                           for k, n in enumerate(held_out_neighbours(args.capture / "transforms.json", args.eval_interval), 1))
    console.print(table)
    if args.out is not None:
        (args.out / "view_diff.md").write_text(
            f"Sampler minus {args.baseline} SSIM on each held-out view (mean over seeds; in brackets, seeds below), "
            "split into the photo's flat, middle and textured thirds by its local luminance spread in SSIM's window "
            f"(the three sum to the total), the render's own local spread in the flat third against uniform's render's "
            "(speckle where the photo has none), the squared error in each third against uniform's there, and the part of the view where the two renders' depth differs by more "
            f"than {DEPTH_MOVED:.0%}.\n\n{table}\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
