"""``evos-image fit``: fit images with SIREN / hash-grid INRs under EVOS and baseline samplers.

    evos-image fit skimage:astronaut --strategies evos full uniform
    evos-image fit path/to/image.png --resolution 256 --backbone.width 128
    evos-image fit path/to/folder/ --iterations 5000

User mistakes (missing or corrupt images, bad flag values, an output folder that already holds
results or cannot be written) end with a one-line error and exit code 2 (1 for a diverged run),
never a traceback, and are all caught before training starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import torch
import tyro
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evos_nerf.core import EvolutionConfig
from evos_nerf.errors import NonFiniteLossError, UserInputError
from evos_nerf.image.backbones import BackboneConfig
from evos_nerf.image.checks import check_backbone, check_evos, check_evos_budget, check_run, check_strategies
from evos_nerf.image.outputs import ImageFolder, prepare_out, run_names
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
    """Strategies to compare under the same backbone and seed (each at most once)."""
    iterations: int = 1000
    resolution: Optional[int] = 256
    """Resize so the longer side has this many pixels (None keeps the original size)."""
    out: Path = Path("outputs/image")
    """Runs go to OUT/IMAGE/STRATEGY; images sharing a stem are filed under their full file names."""
    overwrite: bool = False
    """Replace OUT/IMAGE folders that already hold results (as a whole, once the new runs finish);
    without it such a folder stops the fit before training."""
    seed: int = 3407
    log_every: int = 50
    maps: bool = False
    """Also write fitness and selection maps as PNGs at every log step, plus a contact sheet and an
    animated GIF of how the selection evolves (RUN/maps/)."""
    device: Optional[str] = None
    """cpu or cuda; default: cuda when available."""
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(width=128))
    evos: EvolutionConfig = field(default_factory=EvolutionConfig)


def pick_device(name: Optional[str]) -> torch.device:
    """The ``--device`` flag (CUDA when available by default), refused in one line when it cannot run."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {name!r} requested but CUDA is not available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserInputError(f"--device must be cpu or cuda[:N], got {name!r}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device must be cpu or cuda[:N], got {name!r}") from None


def check_args(args: Fit) -> None:
    """Every flag, before anything is loaded or built."""
    check_strategies(args.strategies)
    check_run(args.iterations, args.log_every, args.resolution)
    check_backbone(args.backbone)
    check_evos(args.evos)


def run_fit(args: Fit) -> List[Path]:
    """Validate everything first (nothing is trained on bad input), then fit; returns run folders."""
    check_args(args)
    device = pick_device(args.device)
    sources = list_images(args.source)
    names = run_names(sources)
    prepare_out(args.out, names, args.overwrite)
    signals = [load_image(source, args.resolution, name=name) for source, name in zip(sources, names)]
    for signal in signals:
        check_evos_budget(signal, args.strategies, args.evos, args.iterations)
    lpips, lpips_reason = build_lpips()
    if lpips is None:
        console.print(f"[yellow]{escape(lpips_reason)}[/yellow]")
    written: List[Path] = []
    for signal in signals:
        folder = ImageFolder(args.out, signal.name, args.overwrite)
        try:
            _fit_image(args, signal, device, folder, lpips, lpips_reason)
        except BaseException:
            folder.discard()  # OUT/IMAGE keeps its previous results; no half-finished comparison
            raise
        final = folder.commit()
        written.extend(final / strategy for strategy in args.strategies)
    return written


def _fit_image(args: Fit, signal, device: torch.device, folder: ImageFolder, lpips, lpips_reason: str) -> None:
    """Every strategy on one image, written into the image's staging folder."""
    from evos_nerf.image.maps import SelectionMaps
    from evos_nerf.image.report import metrics_dict, save_psnr_plot, write_run
    from evos_nerf.image.trainer import ImageFitter

    if signal.note:
        console.print(f"[cyan]{escape(signal.name)}[/cyan]: {escape(signal.note)}")
    results = []
    for strategy in args.strategies:
        fitter = ImageFitter(signal, strategy, args.iterations, args.evos, args.backbone, args.seed, device)
        run_dir = folder.run_dir(strategy)
        maps = SelectionMaps(run_dir, signal.height, signal.width) if args.maps else None
        if strategy == args.strategies[0]:
            console.print(
                f"{escape(signal.name)}: {signal.width}x{signal.height}, {args.backbone.kind} "
                f"({fitter.result.num_params} parameters, implementation {fitter.result.implementation}), "
                f"device {device}"
            )
        with Progress(
            TextColumn(f"{escape(signal.name)} [bold]{strategy}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[psnr]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("fit", total=args.iterations, psnr="")
            for entry in fitter.run(args.iterations, args.log_every, on_step=lambda _: progress.advance(task)):
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
        results.append(result)
    save_psnr_plot(folder.staging / "psnr_vs_time.png", results)
    _print_summary(signal.name, results)


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


def _print_error(err: Exception) -> None:
    # One line whatever the terminal width, and no rich markup read into paths or ranges like [0, 1].
    err_console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: sys.argv), fit, and return the exit code: 0, 2 bad input, 1 diverged."""
    args = tyro.extras.subcommand_cli_from_dict({"fit": Fit}, prog="evos-image", args=argv)
    try:
        written = run_fit(args)
    except UserInputError as err:
        _print_error(err)
        return 2
    except NonFiniteLossError as err:
        _print_error(err)
        return 1
    console.print(f"wrote {len(written)} runs under {escape(str(args.out))}")
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
