"""Does the shape of the training error change as it falls? A diagnostic for choosing a ratio schedule.

EVOS's step schedule anneals the share of pixels it trains on from r0 to 1 by step count. A
schedule driven by the data instead would set the share from how concentrated the error is
(``evos_nerf.core.fitness_stats.error_concentration``: the share of pixels that holds it). That is
only a different schedule if the concentration changes during training. This trains one strategy
of a benchmark preset and reads the selector's cached per-pixel errors every ``--every`` steps:

    python scripts/error_shape.py --scene fern --strategy uniform --rays 2048 --out benchmarks/real_diagnostics

Under ``uniform`` the cached errors are an unbiased sample of the pixels (each visited pixel holds
the error of its last training ray). ``all`` reads every visited pixel (stale ones included),
``recent`` only those measured since the previous key iteration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import tyro
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_nerf  # noqa: E402

from evos_nerf.core.fitness_stats import error_concentration  # noqa: E402
from evos_nerf.io import write_json, write_text  # noqa: E402

console = Console()


@dataclass
class Args:
    scene: str = "fern"
    """A scene of the preset."""
    strategy: str = "uniform"
    """A benchmark strategy name (``bench_nerf.py``'s, ablations included)."""
    preset: str = "real"
    seed: int = 0
    steps: Optional[int] = None
    """Steps to train (default: the preset's budget; the schedules end there)."""
    rays: Optional[int] = None
    every: int = 100
    """Read the errors every this many steps."""
    threads: int = 1
    shared: Path = bench_nerf.ROOT.parent / "shared" / "data"
    work: Path = Path("/tmp/evos-error-shape")
    out: Optional[Path] = None
    """Write ``error_shape_<scene>_<strategy>_s<seed>.json`` and ``.md`` here."""


def read_errors(selector) -> Dict[str, Any]:
    store = selector.store
    fitness = store.fitness.float()
    visited = (store.epoch > 0) & ~torch.isnan(fitness)
    recent = visited & (store.epoch >= max(1, store.current_epoch - 1))
    return {
        "visited_share": float(visited.sum()) / max(store.num_valid, 1),
        "mean_error": float(fitness[visited].double().mean()) if bool(visited.any()) else float("nan"),
        "all": error_concentration(fitness[visited]),
        "recent": error_concentration(fitness[recent]),
    }


def table(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| step | visited | mean error | support (all / recent) | top 10% | top 25% | top 50% |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, n = r["all"], r["recent"]
        lines.append(
            f"| {r['step']} | {r['visited_share']:.2f} | {r['mean_error']:.4f} | {a['support']:.3f} / {n['support']:.3f} "
            f"| {a['top_0.1']:.2f} | {a['top_0.25']:.2f} | {a['top_0.5']:.2f} |"
        )
    return "\n".join(lines)


def main(args: Args) -> None:
    if args.every < 1 or args.threads < 1:
        raise SystemExit(f"--every and --threads must be >= 1 (got {args.every}, {args.threads})")
    torch.set_num_threads(args.threads)
    preset = bench_nerf.load_preset(args.preset)
    spec = next((s for s in preset["scenes"] if s["name"] == args.scene), None)
    if spec is None:
        raise SystemExit(f"--scene {args.scene!r} is not in preset {args.preset!r} ({', '.join(s['name'] for s in preset['scenes'])})")
    bench = bench_nerf.Args(preset=args.preset, shared=args.shared, work=args.work)
    scene = bench_nerf.scene_path(spec, bench)
    if scene is None:
        raise SystemExit(f"--scene {args.scene}: {args.shared / spec['source']} not found")
    budget = bench_nerf.preset_budget(preset, args.steps, args.rays)
    run = bench_nerf.build(spec, scene, args.strategy, args.seed, budget, bench)
    selector = run.trainer.pipeline.datamanager.selector
    rows: List[Dict[str, Any]] = []
    with bench_nerf.own_rng(run):
        for until in range(args.every, budget.steps + 1, args.every):
            bench_nerf.advance(run, until)
            rows.append({"step": until, **read_errors(selector)})
            console.print(f"step {until}: support {rows[-1]['all']['support']:.3f}, top 25% {rows[-1]['all']['top_0.25']:.2f}")
    header = (f"# Error shape: {args.scene}, {args.strategy}, seed {args.seed}\n\n{budget.steps} steps x {budget.rays} rays, "
              f"preset `{args.preset}`, host {bench_nerf.host()}. Support is E[sqrt e]^2 / E[e] (1: error spread evenly; "
              f"k/n: held by k of n pixels); top q: share of the cached squared error held by the highest q of pixels.\n\n")
    text = header + table(rows) + "\n"
    print(text)  # plain: rich would read [sqrt e] as markup and wrap the table
    if args.out is not None:
        stem = f"error_shape_{args.scene}_{args.strategy.replace(':', '-')}_s{args.seed}"
        write_json(args.out / f"{stem}.json", {"scene": args.scene, "strategy": args.strategy, "seed": args.seed,
                                               "steps": budget.steps, "rays": budget.rays, "rows": rows})
        write_text(args.out / f"{stem}.md", text)


if __name__ == "__main__":
    main(tyro.cli(Args))
