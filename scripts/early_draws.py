"""What a sampler's first batches look like, and where they leave a run: a diagnostic for issue 13.

    python scripts/early_draws.py --scene fox --seed 16 --strategies uniform softmining \
        uniform:sel-seed=1001 uniform:sel-seed=2002 softmining:sel-seed=1001

Builds each strategy exactly as ``scripts/bench_nerf.py`` does for the preset (the full budget's
learning-rate decay and schedules, the same model initialisation per seed, each run on its own
random stream), trains them in lock-step to ``--until`` (default 240, the preset's first
evaluation), scores the preset's test views and prints, per strategy:

* test PSNR / SSIM at ``--until`` and each view's PSNR;
* how concentrated its draws were before and after its first ranking (step 100): the spread of
  rays over images (coefficient of variation of the per-image counts) and the share of rays that
  fell in the busiest tenth of the 16 px blocks it touched;
* with ``--per-image``, each training image's rays over the whole run, as a multiple of the first
  strategy's (uniform's) on that image, in file-name order: where along a capture's path a
  sampler moves its batch, next to the held-out views that lose or gain.

On fox a run's end result is decided in its first hundred batches (benchmarks/README.md, "What
decides Soft Mining's fox runs"). Whether a sampler lands a better run by drawing a different
*kind* of batch (concentrated on some images or regions) or by drawing *other* pixels of the same
kind is what these two numbers tell apart: uniform on other selection streams is the yardstick.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import tyro
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_nerf  # noqa: E402

console = Console(width=150)  # the table, whole, in a log file too


@dataclass
class Args:
    scene: str = "fox"
    seed: int = 16
    strategies: List[str] = field(default_factory=lambda: ["uniform", "softmining"])
    until: int = 240
    """Train to this step (the real preset evaluates first at 240 of 1200)."""
    first_ranking: int = 100
    """Split the draws here: before and after the step at which EVOS and hard mining first rank."""
    block: int = 16
    per_image: bool = False
    """Also print each training image's rays, over every step trained, against the first strategy's."""
    preset: str = "real"
    shared: Path = bench_nerf.ROOT.parent / "shared" / "data"
    work: Path = Path("/tmp/evos-early-draws")


def concentration(cyx: torch.Tensor, num_cameras: int, block: int = 16) -> Tuple[float, float]:
    """(coefficient of variation of rays per image over all ``num_cameras`` images, share of rays in
    the busiest tenth of the ``block`` px blocks that were drawn at all). Uniform draws give about
    sqrt(images / rays) and a little over a tenth; draws piled onto some images or regions, more."""
    per_image = rays_per_image(cyx, num_cameras).double()
    spread = float(per_image.std() / per_image.mean()) if num_cameras > 1 else 0.0
    keys = (cyx[:, 0] * (cyx[:, 1].max() // block + 1) + cyx[:, 1] // block) * (cyx[:, 2].max() // block + 1) + cyx[:, 2] // block
    counts = torch.unique(keys, return_counts=True)[1].sort(descending=True).values.double()
    busiest = counts[: max(1, counts.numel() // 10)]
    return spread, float(busiest.sum() / counts.sum())


def rays_per_image(cyx: torch.Tensor, num_cameras: int) -> torch.Tensor:
    """How many of the drawn rays (``[R, 3]`` camera, y, x) fell on each of ``num_cameras`` images."""
    return torch.bincount(cyx[:, 0], minlength=num_cameras)


def record_draws(run) -> List[Tuple[int, torch.Tensor]]:
    """Wrap the run's selector so that every batch it selects is kept as (step, flat indices)."""
    selector = run.trainer.pipeline.datamanager.selector
    select, kept = selector.select, []

    def select_and_keep(batch_size=None):
        selection = select(batch_size)
        kept.append((selector.step, selection.flat.detach().cpu().clone()))
        return selection

    selector.select = select_and_keep
    return kept


def main(args: Args) -> None:
    if args.until < 1 or args.first_ranking < 0:
        raise SystemExit(f"--until must be >= 1 and --first-ranking >= 0 (got {args.until}, {args.first_ranking})")
    torch.set_num_threads(1)  # as every reported group: a result's identity includes its threads
    preset = bench_nerf.load_preset(args.preset)
    specs = [s for s in preset["scenes"] if s["name"] == args.scene]
    if not specs:
        raise SystemExit(f"--scene {args.scene!r} is not in preset {args.preset!r}")
    spec = {**specs[0], "test_images": bench_nerf.nerf_report.preset_test_images(preset, args.scene)}
    bench = bench_nerf.Args(preset=args.preset, shared=args.shared, work=args.work)
    scene = bench_nerf.scene_path(spec, bench)
    if scene is None:
        raise SystemExit(f"scene {args.scene!r} not found under {args.shared}")
    budget = bench_nerf.preset_budget(preset)
    group = [bench_nerf.build(spec, scene, s, args.seed, budget, bench) for s in args.strategies]
    draws: Dict[str, List[Tuple[int, torch.Tensor]]] = {run.strategy: record_draws(run) for run in group}
    bench_nerf.advance_group(group, args.until, bench.interleave)
    table = Table(title=f"{args.scene} seed {args.seed}, step {args.until} of {budget.steps}")
    for column in ("strategy", "PSNR", "SSIM", "views' PSNR", f"rays per image, CV (< {args.first_ranking} / after)",
                   "busiest 10% of blocks hold (< / after)"):
        table.add_column(column)
    for run in group:
        with bench_nerf.own_rng(run):
            bench_nerf.evaluate(run)
        store = run.trainer.pipeline.datamanager.selector.store
        cells = []
        for early in (True, False):
            flat = [f for step, f in draws[run.strategy] if (step < args.first_ranking) == early]
            cells.append(concentration(store.unflatten(torch.cat(flat)), int(store.cameras.max()) + 1, args.block) if flat else None)
        end = run.history[-1]
        table.add_row(run.strategy, f"{end['psnr']:.2f}", f"{end['ssim']:.3f}", " ".join(f"{v:.2f}" for v in end["view_psnr"]),
                      " / ".join("-" if c is None else f"{c[0]:.3f}" for c in cells),
                      " / ".join("-" if c is None else f"{100 * c[1]:.1f}%" for c in cells))
    console.print(table)
    if args.per_image:
        console.print(per_image_table(group, draws))


def per_image_table(group, draws: Dict[str, List[Tuple[int, torch.Tensor]]]) -> Table:
    """Rays per training image over the run, against the first strategy's (see ``per_image_rows``)."""
    store = group[0].trainer.pipeline.datamanager.selector.store
    names = [Path(n).name for n in group[0].trainer.pipeline.datamanager.train_dataset.image_filenames]
    counts = {run.strategy: rays_per_image(store.unflatten(torch.cat([f for _, f in draws[run.strategy]])), len(names))
              for run in group}
    first = group[0].strategy
    table = Table(title=f"rays per training image, against {first}")
    for column in ("image", first, *(f"{run.strategy} / {first}" for run in group[1:])):
        table.add_column(column)
    for row in per_image_rows(counts, names):
        table.add_row(*row)
    return table


def per_image_rows(counts: Dict[str, torch.Tensor], names: List[str]) -> List[List[str]]:
    """One row per image: its name, the first strategy's ray count, and each other strategy's count
    as a multiple of it (1.00 where it draws as the first one does; "-" where the first drew none)."""
    first, *others = counts
    rows = []
    for camera, name in enumerate(names):
        base = int(counts[first][camera])
        rows.append([name, str(base), *(f"{int(counts[o][camera]) / base:.2f}" if base else "-" for o in others)])
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
