"""What an image fit leaves on disk: metrics JSON, reconstruction, fitness/selection heatmaps, PSNR-vs-time plot.

Every file is written atomically, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from matplotlib.figure import Figure
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from evos_nerf.image.trainer import FitResult  # noqa: E402
from evos_nerf.io import atomic_path, write_json  # noqa: E402


def save_png(path: Path, image01: Tensor) -> None:
    array = (image01.clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def save_heatmaps(path: Path, result: FitResult) -> None:
    """Side by side: reconstruction, last fitness map (if any), and how often each pixel was trained."""
    panels = [("reconstruction", result.reconstruction.numpy(), None)]
    if result.fitness is not None:
        panels.append(("fitness (last key iteration, log10 L2)", np.log10(result.fitness.numpy() + 1e-8), "magma"))
    panels.append(("selection count (iterations trained)", result.selection_counts.numpy(), "viridis"))
    fig = Figure(figsize=(4.2 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels))
    for ax, (title, data, cmap) in zip(np.atleast_1d(axes), panels):
        shown = ax.imshow(data, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if cmap is not None:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{result.image}: {result.strategy}", fontsize=10)
    _save_figure(fig, path)


def save_psnr_plot(path: Path, results: List[FitResult]) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for r in results:
        ax.plot([e.train_time for e in r.history], [e.psnr for e in r.history], label=r.strategy, marker=".")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{results[0].image}: PSNR vs training time")
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def metrics_dict(result: FitResult, lpips: Optional[float], lpips_reason: str, note: str) -> Dict[str, Any]:
    final = result.final
    return {
        "image": result.image,
        "strategy": result.strategy,
        "backbone": result.backbone,
        "implementation": result.implementation,
        "num_params": result.num_params,
        "iterations": result.iterations,
        "input_note": note,
        "final": {
            "psnr": final.psnr,
            "ssim": final.ssim,
            "lpips": lpips,
            "lpips_note": lpips_reason if lpips is None else "AlexNet LPIPS from the local torch hub cache",
            "wall_time_s": final.train_time,
            "sampler_time_s": final.sampler_time,
            "sampler_overhead": final.sampler_time / max(final.train_time, 1e-12),
        },
        "history": [vars(e) for e in result.history],
    }


def write_run(out_dir: Path, result: FitResult, metrics: Dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(out_dir / "reconstruction.png", result.reconstruction)
    save_heatmaps(out_dir / "heatmap.png", result)
    save_psnr_plot(out_dir / "psnr_vs_time.png", [result])
    write_json(out_dir / "metrics.json", metrics)
