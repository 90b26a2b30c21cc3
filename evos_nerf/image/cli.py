"""``evos-image fit``: fit images with SIREN / hash-grid INRs under EVOS and baseline samplers.

    evos-image fit skimage:astronaut --strategies evos full uniform
    evos-image fit path/to/image.png --resolution 256 --backbone.width 128
    evos-image fit path/to/folder/ --iterations 5000

User mistakes (missing or corrupt images, ratios out of range, a NaN loss) end with a one-line
error and exit code 2 (1 for a diverged run), never a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import torch
import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evos_nerf.core import EvolutionConfig
from evos_nerf.errors import NonFiniteLossError, UserInputError
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.signal import list_images, load_image
from evos_nerf.metrics import build_lpips

console = Console()
err_console = Console(stderr=True)

StrategyName = Literal["full", "uniform", "evos", "evos-nocfs", "int", "int-dense", "expansive"]


@dataclass
class Fit:
    """Fit one image (or every image in a folder) with each requested strategy, side by side."""

    source: tyro.conf.Positional[str] = "skimage:astronaut"
    """Image file, folder of images, or skimage:NAME (an image bundled with scikit-image)."""
    strategies: Tuple[StrategyName, ...] = ("evos", "full", "uniform")
    """Strategies to compare under the same backbone and seed."""
    iterations: int = 1000
    resolution: Optional[int] = 256
    """Resize so the longer side has this many pixels (None keeps the original size)."""
    out: Path = Path("outputs/image")
    seed: int = 3407
    log_every: int = 50
    maps: bool = False
    """Also write fitness and selection maps as PNGs at every log step, plus a contact sheet and an
    animated GIF of how the selection evolves (RUN/maps/)."""
    device: Optional[str] = None
    """cpu or cuda; default: cuda when available."""
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=128))
    evos: EvolutionConfig = field(default_factory=EvolutionConfig)


def _device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"device {name!r} requested but CUDA is not available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserInputError(f"device must be cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def run_fit(args: Fit) -> List[Path]:
    """Validate everything first (nothing is trained on bad input), then fit; returns run folders."""
    from evos_nerf.image.maps import SelectionMaps
    from evos_nerf.image.report import metrics_dict, save_psnr_plot, write_run
    from evos_nerf.image.trainer import ImageFitter

    args.evos.validate()
    if args.iterations < 1:
        raise UserInputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.log_every < 1:
        raise UserInputError(f"--log-every must be >= 1, got {args.log_every}")
    device = _device(args.device)
    signals = [load_image(path, args.resolution) for path in list_images(args.source)]
    lpips, lpips_reason = build_lpips()
    if lpips is None:
        console.print(f"[yellow]{lpips_reason}[/yellow]")
    written: List[Path] = []
    for signal in signals:
        if signal.note:
            console.print(f"[cyan]{signal.name}[/cyan]: {signal.note}")
        results = []
        for strategy in args.strategies:
            fitter = ImageFitter(signal, strategy, args.iterations, args.evos, args.backbone, args.seed, device)
            run_dir = args.out / signal.name / strategy
            maps = SelectionMaps(run_dir, signal.height, signal.width) if args.maps else None
            if strategy == args.strategies[0]:
                console.print(
                    f"{signal.name}: {signal.width}x{signal.height}, {args.backbone.kind} "
                    f"({fitter.result.num_params} parameters, implementation {fitter.result.implementation}), "
                    f"device {device}"
                )
            with Progress(
                TextColumn(f"{signal.name} [bold]{strategy}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[psnr]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("fit", total=args.iterations, psnr="")
                for entry in fitter.run(
                    args.iterations, args.log_every, on_step=lambda _: progress.advance(task)
                ):
                    progress.update(task, psnr=f"{entry.psnr:.2f} dB")
                    if maps is not None:
                        maps.record(entry.step, fitter.counts, fitter.strategy.fitness_map())
            result = fitter.finish()
            lpips_value = None
            if lpips is not None:
                to_nchw = lambda x: x.permute(2, 0, 1)[None]  # noqa: E731
                lpips_value = float(lpips(to_nchw(result.reconstruction), to_nchw(signal.rgb)))
            write_run(run_dir, result, metrics_dict(result, lpips_value, lpips_reason, signal.note))
            if maps is not None:
                maps.finish(f"{signal.name}: {strategy}, selection share per log interval")
            written.append(run_dir)
            results.append(result)
        save_psnr_plot(args.out / signal.name / "psnr_vs_time.png", results)
        _print_summary(signal.name, results)
    return written


def _print_summary(name: str, results) -> None:
    table = Table(title=f"{name}")
    for col in ("strategy", "PSNR (dB)", "SSIM", "train time (s)", "s / iter", "sampler overhead"):
        table.add_column(col)
    for r in results:
        f = r.final
        table.add_row(
            r.strategy,
            f"{f.psnr:.2f}",
            f"{f.ssim:.3f}",
            f"{f.train_time:.1f}",
            f"{f.train_time / r.iterations:.4f}",
            f"{100 * f.sampler_time / max(f.train_time, 1e-12):.2f}%",
        )
    console.print(table)


def entrypoint() -> None:
    args = tyro.extras.subcommand_cli_from_dict({"fit": Fit}, prog="evos-image")
    try:
        written = run_fit(args)
    except UserInputError as err:
        err_console.print(f"[red]error:[/red] {err}")
        sys.exit(2)
    except NonFiniteLossError as err:
        err_console.print(f"[red]error:[/red] {err}")
        sys.exit(1)
    console.print(f"wrote {len(written)} runs under {args.out}")


if __name__ == "__main__":
    entrypoint()
