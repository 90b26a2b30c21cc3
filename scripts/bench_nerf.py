"""EVOS vs uniform vs hard mining (and ablations) for ``evos-nerf`` on real and procedural scenes.

    python scripts/bench_nerf.py                          # CPU preset (configs/bench_nerf_cpu.yaml)
    python scripts/bench_nerf.py --preset full            # nerfacto-sized, for a GPU

Every strategy trains the identical reduced nerfacto with the same budget and seed. Strategies of
one (scene, seed) advance in lock-step slices, so this machine's speed drift hits them alike;
after each slice every strategy is evaluated on the whole test split (outside the timers).
Writes ``benchmarks/nerf_<preset>.md`` and ``.json`` and prints the same tables.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import torch
import tyro
import yaml
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from rich.console import Console
from rich.table import Table

from evos_nerf.io import write_json, write_text
from evos_nerf.nerfstudio.presets import Budget, run_config
from evos_nerf.scene import make_scene

ROOT = Path(__file__).resolve().parents[1]
console = Console()


@dataclass
class Args:
    preset: str = "cpu"
    shared: Path = ROOT.parent / "shared" / "data"
    out: Path = ROOT / "benchmarks"
    work: Path = Path("/tmp/evos-bench-nerf")
    steps: Optional[int] = None
    """Override the preset's step budget (smoke runs)."""
    scenes: Optional[List[str]] = None
    """Subset of the preset's scenes."""
    strategies: Optional[List[str]] = None
    seeds: Optional[List[int]] = None
    evals: Optional[int] = None
    """Override the number of evaluation points."""
    test_images: Optional[int] = None
    """Evaluate on the first N test images only (override the preset)."""
    name: Optional[str] = None
    """Output file stem (default ``nerf_<preset>``); use it for partial runs of a preset."""
    merge: Optional[List[Path]] = None
    """Train nothing: combine the runs of these result JSONs (partial runs of one preset and
    budget, e.g. one scene or seed per process) into one report under ``--name``."""


@dataclass
class Run:
    scene: str
    strategy: str
    seed: int
    trainer: Any
    step: int = 0
    train_seconds: float = 0.0
    history: Optional[List[Dict[str, float]]] = None


VARIANTS = {
    "no-crossover": {"crossover": "none"},
    "no-stale-correction": {"stale_correction": False},
    "mean-prior": {"unvisited_prior": "mean"},
    "no-mutation": {"mutation": 0.0},
    "weighted": {"importance_weights": 1.0},
    "half-weighted": {"importance_weights": 0.5},
    "step": {"ratio_schedule": "step"},
    "cosine": {"ratio_schedule": "cosine"},
}
"""Ablation suffixes: ``evos:no-crossover``, ``evos:step+weighted`` (joined with ``+``)."""


def strategy_overrides(name: str, cfg) -> None:
    """Map a benchmark strategy name (``base[:variant[+variant]]``) to pixel-sampler settings."""
    sampler = cfg.pipeline.datamanager.pixel_sampler
    base, _, variants = name.partition(":")
    sampler.strategy = base
    for variant in filter(None, variants.split("+")):
        if variant.startswith("ratio="):
            sampler.ratio = float(variant.split("=", 1)[1])
        elif variant in VARIANTS:
            for key, value in VARIANTS[variant].items():
                setattr(sampler, key, value)
        else:
            raise ValueError(f"unknown strategy variant {variant!r} (known: {', '.join(VARIANTS)}, ratio=R)")
    sampler.validate()


def scene_path(spec: Dict[str, Any], args: Args) -> Optional[Path]:
    if spec["source"] == "procedural":
        return make_scene(args.work / "scenes" / spec["name"], resolution=spec["resolution"],
                          num_train=spec.get("num_train", 40), num_val=4, num_test=spec.get("num_test", 6))
    path = args.shared / spec["source"]
    return path if path.is_dir() else None


def build(spec: Dict[str, Any], scene: Path, strategy: str, seed: int, budget: Budget, args: Args) -> Run:
    name = spec["name"]
    cfg = run_config(scene, args.work / "runs", budget, "evos", seed, experiment=f"{name}-s{seed}",
                     scene_format=spec.get("format", "blender"), downscale=spec.get("downscale", 1))
    cfg.timestamp = strategy.replace(":", "-")
    strategy_overrides(strategy, cfg)
    torch.manual_seed(seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode="test")
    if args.test_images:
        loader = trainer.pipeline.datamanager.fixed_indices_eval_dataloader
        loader.image_indices = loader.image_indices[: args.test_images]
    return Run(name, strategy, seed, trainer, history=[])


def advance(run: Run, until: int) -> None:
    """Train to ``until`` exactly as Trainer.train does (callbacks included), timing only training."""
    trainer = run.trainer
    while run.step < until:
        start = time.perf_counter()
        trainer.pipeline.train()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(run.step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(run.step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(run.step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        run.train_seconds += time.perf_counter() - start
        run.step += 1


def evaluate(run: Run) -> None:
    metrics = run.trainer.pipeline.get_average_eval_image_metrics(step=run.step)
    selector = run.trainer.pipeline.datamanager.selector
    run.history.append({
        "step": run.step,
        "train_seconds": run.train_seconds,
        "psnr": float(metrics["psnr"]),
        "ssim": float(metrics["ssim"]),
        "selection_seconds": selector.selection_seconds,
        "refresh_seconds": selector.refresh_seconds,
    })


def reach(history: List[Dict[str, float]], target: float, key: str) -> Optional[float]:
    """``key`` (train_seconds or step) when test PSNR first reaches target, linear between evals."""
    prev = None
    for h in history:
        if h["psnr"] >= target:
            if prev is None:
                return float(h[key])
            frac = (target - prev["psnr"]) / max(h["psnr"] - prev["psnr"], 1e-9)
            return prev[key] + frac * (h[key] - prev[key])
        prev = h
    return None


def summarise(runs: List[Run]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for scene in sorted({r.scene for r in runs}):
        for seed in sorted({r.seed for r in runs}):
            group = {r.strategy: r for r in runs if r.scene == scene and r.seed == seed}
            uniform = group.get("uniform")
            target = uniform.history[-1]["psnr"] if uniform else None
            for name, r in group.items():
                final = r.history[-1]
                row = out.setdefault(f"{scene}|{name}", {"scene": scene, "strategy": name, "psnr": [], "ssim": [],
                                                         "seconds": [], "ratio": [], "step_ratio": [], "overhead": [], "refresh": []})
                row["psnr"].append(final["psnr"])
                row["ssim"].append(final["ssim"])
                row["seconds"].append(final["train_seconds"])
                row["overhead"].append(final["selection_seconds"] / final["train_seconds"])
                row["refresh"].append(final["refresh_seconds"] / final["train_seconds"])
                if target is not None and uniform is not None:
                    for column, key in (("ratio", "train_seconds"), ("step_ratio", "step")):
                        value = reach(r.history, target, key)
                        row[column].append(None if value is None else value / uniform.history[-1][key])
    return out


def fmt_spread(values: List[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def fmt_ratio(values: List[Optional[float]]) -> str:
    if not values:
        return "-"
    if any(v is None for v in values):
        reached = [v for v in values if v is not None]
        return f"not reached ({len(reached)}/{len(values)} seeds)"
    return fmt_spread(values) + "x"


def report(summary: Dict[str, Dict[str, Any]], header: str) -> str:
    lines = [header, "", "| scene | strategy | test PSNR | test SSIM | train s | time to uniform's final PSNR | steps to it | sampler overhead | re-measure renders |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summary.values():
        lines.append(
            f"| {row['scene']} | {row['strategy']} | {fmt_spread(row['psnr'])} | {fmt_spread(row['ssim'], 3)} | "
            f"{fmt_spread(row['seconds'], 0)} | {fmt_ratio(row['ratio'])} | {fmt_ratio(row['step_ratio'])} | "
            f"{100 * statistics.mean(row['overhead']):.2f}% | {100 * statistics.mean(row['refresh']):.2f}% |"
        )
    return "\n".join(lines) + "\n"


def merge(args: Args) -> None:
    """One report from several result files of the same budget (each run is kept as measured)."""
    runs: List[Run] = []
    budgets, presets, threads = [], [], set()
    for path in args.merge or []:
        data = json.loads(path.read_text())
        budgets.append(data["budget"])
        presets.append(data["preset"])
        threads.add(str(data.get("threads", "?")))
        runs += [Run(r["scene"], r["strategy"], r["seed"], None, history=r["history"]) for r in data["runs"]]
    if not runs:
        raise SystemExit("--merge: no runs in the given files")
    if any(b != budgets[0] for b in budgets):
        raise SystemExit(f"--merge: the files have different budgets: {budgets}")
    seeds = sorted({r.seed for r in runs})
    write_results(runs, presets[0], Budget(**budgets[0]), seeds, args, final=True, threads="/".join(sorted(threads)))


def curves(runs: List[Run]) -> str:
    """Test PSNR / SSIM and training seconds at every evaluation, one table per (scene, seed)."""
    lines = ["", "## Curves: test PSNR / SSIM (training seconds) at each evaluation", ""]
    for scene in sorted({r.scene for r in runs}):
        for seed in sorted({r.seed for r in runs if r.scene == scene}):
            group = [r for r in runs if r.scene == scene and r.seed == seed]
            lines += [f"### {scene}, seed {seed}", "", "| step | " + " | ".join(r.strategy for r in group) + " |",
                      "|---|" + "---|" * len(group)]
            steps = sorted({h["step"] for r in group for h in r.history})
            for step in steps:
                cells = []
                for r in group:
                    h = next((h for h in r.history if h["step"] == step), None)
                    cells.append("-" if h is None else f"{h['psnr']:.2f} / {h['ssim']:.3f} ({h['train_seconds']:.0f} s)")
                lines.append(f"| {step} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(args: Args) -> None:
    if args.merge:
        merge(args)
        return
    preset = yaml.safe_load((ROOT / "configs" / f"bench_nerf_{args.preset}.yaml").read_text())
    budget = Budget(steps=args.steps or preset["steps"], rays=preset["rays"], full=preset.get("full", False),
                    decay_to_budget=preset.get("decay_to_budget", False), model=preset.get("model", {}))
    evals = args.evals or preset.get("evals", 6)
    args.test_images = args.test_images or preset.get("test_images")
    strategies = args.strategies or preset["strategies"]
    seeds = args.seeds or preset["seeds"]
    runs: List[Run] = []
    for spec in preset["scenes"]:
        if args.scenes and spec["name"] not in args.scenes:
            continue
        scene = scene_path(spec, args)
        if scene is None:
            console.print(f"[yellow]skipping {spec['name']}: {args.shared / spec['source']} not found[/yellow]")
            continue
        for seed in seeds:
            group = [build(spec, scene, s, seed, budget, args) for s in strategies]
            for k in range(1, evals + 1):
                until = budget.steps * k // evals
                for run in group:  # round robin
                    advance(run, until)
                    evaluate(run)
                console.print(f"{spec['name']} seed {seed} step {until}: " + ", ".join(
                    f"{r.strategy} {r.history[-1]['psnr']:.2f} dB" for r in group))
            runs += group
            for run in group:
                run.trainer = None  # free memory
            write_results(runs, preset, budget, seeds, args, final=False)  # partial results survive a stop
    if not runs:
        console.print("[red]no scene available[/red]")
        sys.exit(2)
    write_results(runs, preset, budget, seeds, args, final=True)


def write_results(runs: List[Run], preset: Dict[str, Any], budget: Budget, seeds: List[int], args: Args,
                  final: bool, threads: Optional[str] = None) -> None:
    threads = threads or str(torch.get_num_threads())
    summary = summarise(runs)
    header = (f"# NeRF benchmark, preset `{args.preset}`\n\n{budget.steps} steps x {budget.rays} rays, reduced nerfacto "
              f"(full={budget.full}), seeds {seeds}, torch {torch.__version__}, {threads} thread(s) per process. "
              "Mean ± std over seeds. Times are training seconds (selection, forward, backward, step; eval excluded).")
    text = report(summary, header) + curves(runs)
    table = Table(title=f"NeRF benchmark ({args.preset})")
    for col in ("scene", "strategy", "test PSNR", "train s", "to uniform's final", "overhead"):
        table.add_column(col)
    for row in summary.values():
        table.add_row(row["scene"], row["strategy"], fmt_spread(row["psnr"]), fmt_spread(row["seconds"], 0),
                      fmt_ratio(row["ratio"]), f"{100 * statistics.mean(row['overhead']):.2f}%")
    if final:
        console.print(table)
    stem = args.name or f"nerf_{args.preset}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / f"{stem}.md", text if final else text + "\n(partial: the run is still going)\n")
    write_json(args.out / f"{stem}.json", {
        "preset": preset, "budget": vars(budget), "threads": threads, "summary": summary, "complete": final,
        "runs": [{"scene": r.scene, "strategy": r.strategy, "seed": r.seed, "history": r.history} for r in runs],
    })
    console.print(f"wrote {args.out / f'{stem}.md'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
