"""Table 1 of the EVOS paper, reproduced: sampling strategies under a fixed iteration budget.

    python scripts/bench_image.py                  # CPU preset (configs/bench_image_cpu.yaml)
    python scripts/bench_image.py --paper          # 16 images, 512x512, 5000 iterations (GPU)

All strategies of one image advance in lock-step slices (round robin), so drifts in this
machine's speed hit every strategy alike; times are the trainer's own per-step timers.
Writes ``benchmarks/image_<preset>.md`` and ``.json`` and prints the same tables.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import torch
import tyro
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from evos_nerf.core import EvolutionConfig
from evos_nerf.errors import install_excepthook
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.cli import pick_device
from evos_nerf.image.outputs import run_names
from evos_nerf.image.signal import list_images, load_image
from evos_nerf.image.trainer import FitResult, ImageFitter
from evos_nerf.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
DIV2K = ROOT.parent / "shared" / "data" / "div2k_evos"
console = Console()


@dataclass
class Args:
    preset: Literal["cpu", "paper", "reference"] = "cpu"
    """cpu: 2 cores in ~25 min; paper: Table 1 scale for a GPU; reference: the official code's CPU timing run."""
    paper: bool = False
    """Shorthand for --preset paper (16 images, 512x512, 5000 iterations, both schedulers)."""
    data: Path = DIV2K
    """Folder of images: the paper's 16 DIV2K test images at 512x512 by default. Any other folder
    runs the same protocol on the first images of its sorted listing (as many as the preset takes),
    each resized so its longer side is the preset's resolution, and writes
    ``image_<preset>_<folder>.md`` / ``.json``: the DIV2K report is never written over."""
    out: Path = ROOT / "benchmarks"
    device: Optional[str] = None
    """cpu or cuda; default: cuda when available."""
    iterations: Optional[int] = None
    """Override the preset's iteration count (smoke runs)."""
    max_images: Optional[int] = None
    """Run on at most this many of the preset's images."""


def load_preset(name: str) -> Dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / f"bench_image_{name}.yaml").read_text())


def time_to_reach(result: FitResult, target: float) -> Optional[float]:
    """Training seconds at the first log step whose PSNR reaches ``target`` (None if never)."""
    for entry in result.history:
        if entry.psnr >= target:
            return entry.train_time
    return None


def at_fraction(result: FitResult, fraction: float):
    step = int(round(result.iterations * fraction))
    return min(result.history, key=lambda e: abs(e.step - step))


def run_image(path: str, name: str, preset: Dict[str, Any], setting: Dict[str, Any], device: torch.device,
              progress) -> List[FitResult]:
    signal = load_image(path, preset["resolution"], name=name)
    evos = EvolutionConfig(ratio=setting["ratio"], ratio_schedule=setting["schedule"])
    backbone = BackboneConfig(kind="siren", width=preset["width"], depth=preset["depth"])
    total = preset["iterations"]
    fitters = [ImageFitter(signal, s, total, evos, backbone, preset["seed"], device) for s in setting["strategies"]]
    task = progress.add_task(f"{signal.name} {setting['label']}", total=total * len(fitters))
    slice_len = preset["log_every"]
    for until in range(slice_len, total + slice_len, slice_len):
        for fitter in fitters:  # round robin: speed drift hits all strategies alike
            for _ in fitter.run(until, preset["log_every"], on_step=lambda _: progress.advance(task)):
                pass
    progress.remove_task(task)
    return [f.finish() for f in fitters]


def summarise(results: List[FitResult]) -> Dict[str, Dict[str, Any]]:
    """Per-strategy means over images, plus time to reach full's final PSNR on each image."""
    by_image: Dict[str, Dict[str, FitResult]] = {}
    for r in results:
        by_image.setdefault(r.image, {})[r.strategy] = r
    rows: Dict[str, Dict[str, Any]] = {}
    for strategies in by_image.values():
        full = strategies.get("full")
        for name, r in strategies.items():
            row = rows.setdefault(name, {"psnr": {}, "ssim": {}, "time": [], "overhead": [], "ttt": [], "ttt_ratio": [], "uniform_gap": []})
            for frac in (0.2, 0.4, 1.0):
                e = at_fraction(r, frac)
                row["psnr"].setdefault(frac, []).append(e.psnr)
                row["ssim"].setdefault(frac, []).append(e.ssim)
            row["time"].append(r.final.train_time)
            row["overhead"].append(r.final.sampler_time / max(r.final.train_time, 1e-9))
            if full is not None:
                reach = time_to_reach(r, full.final.psnr)
                row["ttt"].append(reach)
                row["ttt_ratio"].append(None if reach is None else reach / full.final.train_time)
            uniform = strategies.get("uniform")
            if uniform is not None:
                row["uniform_gap"].append(r.final.psnr - uniform.final.psnr)
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else float("nan")  # noqa: E731
    summary = {}
    for name, row in rows.items():
        reached = [x for x in row["ttt_ratio"] if x is not None]
        summary[name] = {
            **{f"psnr@{int(f * 100)}%": mean(v) for f, v in row["psnr"].items()},
            **{f"ssim@{int(f * 100)}%": mean(v) for f, v in row["ssim"].items()},
            "time_s": mean(row["time"]),
            "sampler_overhead": mean(row["overhead"]),
            "reached_full_final": f"{len(reached)}/{len(row['ttt_ratio'])}",
            "time_to_full_final_ratio": mean(reached) if len(reached) == len(row["ttt_ratio"]) and reached else None,
            "time_to_full_final_s": [x for x in row["ttt"]],
            "psnr_minus_uniform": mean(row["uniform_gap"]),
        }
    return summary


def markdown_table(label: str, summary: Dict[str, Dict[str, Any]]) -> str:
    head = "| strategy | PSNR 20% | PSNR 40% | PSNR 100% | SSIM 20% | SSIM 40% | SSIM 100% | time (s) | time to full's final PSNR | vs uniform | sampler overhead |"
    lines = [f"**{label}**", "", head, "|" + "---|" * 11]
    for name, s in summary.items():
        ratio = s["time_to_full_final_ratio"]
        if ratio is not None:
            reach = f"{ratio:.2f}x full"
        elif s["reached_full_final"].endswith("/0"):
            reach = "- (no full run in this setting)"
        else:
            reach = f"not reached ({s['reached_full_final']} images)"
        lines.append(
            f"| {name} | {s['psnr@20%']:.2f} | {s['psnr@40%']:.2f} | {s['psnr@100%']:.2f} | "
            f"{s['ssim@20%']:.3f} | {s['ssim@40%']:.3f} | {s['ssim@100%']:.3f} | {s['time_s']:.1f} | {reach} | "
            f"{s['psnr_minus_uniform']:+.2f} dB | {100 * s['sampler_overhead']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def print_table(label: str, summary: Dict[str, Dict[str, Any]]) -> None:
    table = Table(title=label)
    for col in ("strategy", "PSNR 20/40/100%", "SSIM 100%", "time (s)", "to full's final", "vs uniform", "overhead"):
        table.add_column(col)
    for name, s in summary.items():
        ratio = s["time_to_full_final_ratio"]
        table.add_row(
            name,
            f"{s['psnr@20%']:.2f} / {s['psnr@40%']:.2f} / {s['psnr@100%']:.2f}",
            f"{s['ssim@100%']:.3f}",
            f"{s['time_s']:.1f}",
            f"{ratio:.2f}x" if ratio is not None else f"no ({s['reached_full_final']})",
            f"{s['psnr_minus_uniform']:+.2f} dB",
            f"{100 * s['sampler_overhead']:.2f}%",
        )
    console.print(table)


def preset_images(files: List[str], images: Any) -> List[str]:
    """The preset's ``images``: ``all``, or the first N of the folder's sorted listing (DIV2K's
    00.png, 01.png, ... for the CPU presets)."""
    return files if images == "all" else files[: int(images)]


def report_stem(args: Args) -> str:
    """``image_<preset>`` on the DIV2K folder; another folder adds its name."""
    on_div2k = args.data.resolve() == DIV2K.resolve()
    return f"image_{args.preset}" if on_div2k else f"image_{args.preset}_{args.data.resolve().name}"


def main(args: Args) -> None:
    install_excepthook()  # a bad image or flag ends with one line naming it
    if args.paper:
        args.preset = "paper"
    for flag, value in (("--iterations", args.iterations), ("--max-images", args.max_images)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be >= 1 (got {value})")
    preset = load_preset(args.preset)
    if args.iterations:
        preset["iterations"] = args.iterations
        preset["log_every"] = max(1, min(preset["log_every"], args.iterations // 10))
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: not a folder")
    device = pick_device(args.device)
    files = preset_images(list_images(args.data), preset["images"])
    files = files[: args.max_images] if args.max_images else files
    names = run_names(files)
    listed = ", ".join(names)
    console.print(
        f"preset {args.preset}: {len(files)} images ({listed}) from {args.data}, longer side {preset['resolution']} px, "
        f"SIREN width {preset['width']}, {preset['iterations']} iterations, device {device}, torch threads {torch.get_num_threads()}"
    )
    report = [f"# Image benchmark, preset `{args.preset}`", ""]
    report.append(
        f"{len(files)} images ({listed}) from `{args.data.resolve().name}`, longer side {preset['resolution']} px, "
        f"SIREN width {preset['width']} depth {preset['depth']}, {preset['iterations']} iterations, seed {preset['seed']}, "
        f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}. "
        "Times are training seconds per image (sampling + forward + loss + backward + step), means over images."
    )
    report.append("")
    data: Dict[str, Any] = {"preset": args.preset, "config": preset, "device": str(device), "settings": []}
    with Progress(console=console, transient=True) as progress:
        for setting in preset["settings"]:
            results: List[FitResult] = []
            for path, name in zip(files, names):
                results += run_image(path, name, preset, setting, device, progress)
            summary = summarise(results)
            print_table(setting["label"], summary)
            report.append(markdown_table(setting["label"], summary))
            data["settings"].append(
                {
                    "label": setting["label"],
                    "summary": summary,
                    "runs": [
                        {"image": r.image, "strategy": r.strategy, "history": [vars(e) for e in r.history]}
                        for r in results
                    ],
                }
            )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(args)
    write_text(args.out / f"{stem}.md", "\n".join(report))
    write_json(args.out / f"{stem}.json", data)
    console.print(f"wrote {args.out / f'{stem}.md'} and .json")


if __name__ == "__main__":
    main(tyro.cli(Args))
