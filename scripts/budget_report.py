"""Can a sampler let a user train for less? Finals at a smaller budget (fewer steps, or fewer rays a
step) against uniform's final at the full one.

``bench_nerf.py``'s "time to uniform's final PSNR" is a crossing point inside a full-budget run,
whose learning rate has not decayed yet at that point. A user who wants to train for half as long
runs a half-length schedule instead (``--steps 600``: nerfacto's learning-rate decay and EVOS's
ratio schedule both end at the shorter budget). This pairs each such run with the full-budget
uniform run of the same (scene, seed) and prints the differences:

    python scripts/bench_nerf.py --preset real --steps 600 --scenes fern --seeds 0 --name real_half_fern_s0
    python scripts/budget_report.py --short benchmarks/real_half/*.json --full benchmarks/nerf_real.json

The image path's EVOS saves its time another way: it trains only r_t N of the N pixels a step.
The ray analogue is a smaller batch, and runs at ``--rays 2048`` already are one against runs at
4096 (the same rays in total at 1200 steps each as 600 steps at 4096):

    python scripts/budget_report.py --short benchmarks/nerf_real_rays2048.json --full benchmarks/nerf_real_rays4096.json

Training times of different processes compare only loosely (this machine's speed drifts); the
fraction of rays trained is exact.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import tyro
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nerf_report  # noqa: E402

from evos_nerf.io import write_text  # noqa: E402

console = Console()


@dataclass
class Args:
    short: List[Path]
    """Result files (parts or merged) of the smaller budget (one rays-a-step count among them)."""
    full: List[Path]
    """Result files of the full budget; their uniform runs are the reference."""
    out: Optional[Path] = None
    """Also write the table (markdown) here."""


def load(paths: List[Path], flag: str):
    files = nerf_report.read_results(paths, flag)
    runs = [run for f in files for run in f.runs]
    if not runs:
        raise SystemExit(f"{flag}: no runs in {', '.join(map(str, paths))}")
    return runs, [(f.path, f.data["budget"]) for f in files]


def main(args: Args) -> None:
    short, short_budgets = load(args.short, "--short")
    full, full_budgets = load(args.full, "--full")
    (ref_path, ref), *_ = full_budgets
    (_, short_ref), *_ = short_budgets
    size = lambda budget: {k: v for k, v in budget.items() if k not in ("steps", "rays")}  # noqa: E731
    for path, budget in short_budgets + full_budgets:
        if size(budget) != size(ref):
            raise SystemExit(f"{path}: its budget differs from {ref_path} in more than steps and rays a step "
                             f"({budget} vs {ref})")
    for budgets in (full_budgets, short_budgets):  # one ray share for the whole table
        (first, expected), *_ = budgets
        for path, budget in budgets:
            if budget["rays"] != expected["rays"]:
                raise SystemExit(f"{path}: {budget['rays']} rays a step, but {first} has {expected['rays']}")
    if any(b["steps"] * b["rays"] >= ref["steps"] * ref["rays"] for _, b in short_budgets):
        raise SystemExit(f"--short: every file must train fewer rays in all (steps x rays a step) than --full's "
                         f"{ref['steps']} x {ref['rays']}")
    lines = nerf_report.against_full_budget(short, full, short_ref["rays"] / ref["rays"])
    if not lines:
        raise SystemExit("no (scene, seed) of --short has a uniform run in --full")
    text = "\n".join(lines)
    console.print(text)
    if args.out:
        write_text(args.out, f"# Smaller budget ({short_ref['rays']} rays a step) vs uniform at the full budget "
                   f"({ref['steps']} steps x {ref['rays']} rays)\n\n"
                   f"Each row: that strategy trained with a smaller budget; Δ = its final minus uniform's final at "
                   f"the full budget, same (scene, seed). Produced by `scripts/budget_report.py`.\n\n{text}\n")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
