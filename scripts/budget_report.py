"""Can a sampler let a user train for fewer steps? Finals at a shorter budget against uniform's final
at the full one.

``bench_nerf.py``'s "time to uniform's final PSNR" is a crossing point inside a full-budget run,
whose learning rate has not decayed yet at that point. A user who wants to train for half as long
runs a half-length schedule instead (``--steps 600``: nerfacto's learning-rate decay and EVOS's
ratio schedule both end at the shorter budget). This pairs each such run with the full-budget
uniform run of the same (scene, seed) and prints the differences:

    python scripts/bench_nerf.py --preset real --steps 600 --scenes fern --seeds 0 --name real_half_fern_s0
    python scripts/budget_report.py --short benchmarks/real_half/*.json --full benchmarks/nerf_real.json

Training times of different processes compare only loosely (this machine's speed drifts); the
step fraction is exact.
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
    """Result files (parts or merged) of the shorter budget."""
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
    apart_from_steps = lambda budget: {k: v for k, v in budget.items() if k != "steps"}  # noqa: E731
    for path, budget in short_budgets + full_budgets:
        if apart_from_steps(budget) != apart_from_steps(ref):
            raise SystemExit(f"{path}: its budget differs from {ref_path} in more than the step count "
                             f"({budget} vs {ref})")
    if any(b["steps"] >= ref["steps"] for _, b in short_budgets):
        raise SystemExit(f"--short: every file must have fewer steps than --full's {ref['steps']}")
    lines = nerf_report.against_full_budget(short, full)
    if not lines:
        raise SystemExit("no (scene, seed) of --short has a uniform run in --full")
    text = "\n".join(lines)
    console.print(text)
    if args.out:
        write_text(args.out, f"# Shorter budget vs uniform at the full budget ({ref['steps']} steps)\n\n"
                   f"Each row: that strategy trained with a shorter schedule; Δ = its final minus uniform's final at "
                   f"the full budget, same (scene, seed). Produced by `scripts/budget_report.py`.\n\n{text}\n")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
