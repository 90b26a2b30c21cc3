"""``evos-nerf-demo``: what EVOS buys on a NeRF, with no download and no data on disk.

It writes the package's procedural blender scene, then trains ``evos-nerf-blender`` twice on it
with the same budget (steps, rays per step, model, seed), once sampling rays uniformly
(nerfacto's default) and once with EVOS, through nerfstudio's own training loop. Both are
evaluated on the test split every few steps as ``ns-eval`` does; training time excludes those
evaluations and each run's first two steps (one-time compilation, which would otherwise burden
whichever strategy runs first). It prints both side by side (PSNR, SSIM, training time, and
where EVOS reaches uniform's final PSNR) and writes, under ``--out``:

* ``comparison.png``: test PSNR against step for both strategies;
* ``comparison.json``: the same curves and the final PSNR / SSIM / time;
* ``runs/demo/evos-nerf-blender/{uniform,evos}-<time>/``: the two nerfstudio runs (``config.yml``
  for ``ns-eval`` / ``ns-viewer``, checkpoints), in new folders at every invocation, so a second
  demo never trains over the first one's runs; the comparison files describe the latest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Tuple

import tyro
from rich.console import Console
from rich.table import Table

from evos_nerf.curves import reach
from evos_nerf.io import atomic_path, write_json
from evos_nerf.nerfstudio.presets import Budget, blender_run_config
from evos_nerf.scene import make_scene

console = Console()
STRATEGIES: Tuple[str, str] = ("uniform", "evos")
UNTIMED_STEPS = 2
"""Training time leaves out each run's first steps (one-time compilation) and all evaluations."""


@dataclass
class Demo:
    out: Path = Path("outputs/demo-nerf")
    resolution: int = 100
    """Side of the generated scene's images, in pixels."""
    num_train: int = 40
    budget: Budget = field(default_factory=lambda: Budget(steps=240, rays=1024))
    """The same for both strategies. 240 x 1024 rays visit each of the 400k training pixels about
    0.6 times: the regime where choosing which pixels to train on matters. The whole demo costs
    about 450 CPU-seconds. EVOS trains on uniform samples until its first key iteration (step 82
    of 240), so the two curves part only after it."""
    evals: int = 4
    """Test-split evaluations per run (the points of the PSNR curves)."""
    num_test: int = 3
    seed: int = 42


@dataclass
class Result:
    strategy: str
    run_dir: Path
    history: List[Dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: step (1-based count of steps trained), train_seconds, psnr, ssim."""

    @property
    def final(self) -> Dict[str, float]:
        return self.history[-1]


def eval_steps(steps: int, evals: int) -> List[int]:
    """0-based steps after which to evaluate: evenly spaced, always including the last one."""
    evals = max(1, min(evals, steps))
    return sorted({round(steps * (i + 1) / evals) - 1 for i in range(evals)})


def train_one(scene: Path, args: Demo, strategy: str, started: str) -> Result:
    """nerfstudio's train_loop (seed, trainer setup, Trainer.train) plus timed test evaluations."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.scripts.train import _set_random_seed

    from evos_nerf.nerfstudio.evos_logging import reset_writers

    config = blender_run_config(scene, args.out / "runs", args.budget, strategy, args.seed)
    config.timestamp = f"{strategy}-{started}"
    config.save_config()
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup(test_mode="test")  # evaluations on the test split, as ns-eval does
    result = Result(strategy, config.get_base_dir())
    clock = {"start": time.perf_counter(), "evaluating": 0.0}

    def start_clock(step: int) -> None:
        # The process's first steps pay one-time costs (TorchScript compiles nerfstudio's scripted
        # functions on first use), which would burden whichever strategy runs first.
        clock["start"], clock["evaluating"] = time.perf_counter(), 0.0

    def evaluate(step: int) -> None:
        start = time.perf_counter()
        trained = start - clock["start"] - clock["evaluating"]
        metrics = trainer.pipeline.get_average_eval_image_metrics(step=step)
        result.history.append({"step": step + 1, "train_seconds": trained,
                               "psnr": float(metrics["psnr"]), "ssim": float(metrics["ssim"])})
        clock["evaluating"] += time.perf_counter() - start

    after = [TrainingCallbackLocation.AFTER_TRAIN_ITERATION]
    trainer.callbacks.append(TrainingCallback(after, start_clock, iters=(UNTIMED_STEPS - 1,)))
    trainer.callbacks.append(TrainingCallback(after, evaluate, iters=tuple(eval_steps(args.budget.steps, args.evals))))
    try:
        trainer.train()
    finally:
        reset_writers()
    return result


def plot(results: List[Result], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    canvas = FigureCanvasAgg(fig)  # no pyplot, no global backend switch
    ax = fig.add_subplot()
    for r in results:
        steps = [h["step"] for h in r.history]
        ax.plot(steps, [h["psnr"] for h in r.history], marker="o",
                label=f"{r.strategy}: {r.final['psnr']:.2f} dB in {r.final['train_seconds']:.0f} s")
    ax.set_xlabel("training step")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        canvas.print_png(str(tmp))


def report(results: List[Result], args: Demo) -> Table:
    by = {r.strategy: r for r in results}
    table = Table(title=f"evos-nerf-blender, same budget: {args.budget.steps} steps x {args.budget.rays} rays, "
                        f"test split ({args.num_test} views)")
    table.add_column("")
    for r in results:
        table.add_column(r.strategy, justify="right")
    table.add_row("PSNR (dB)", *(f"{r.final['psnr']:.2f}" for r in results))
    table.add_row("SSIM", *(f"{r.final['ssim']:.3f}" for r in results))
    table.add_row("training time (s)", *(f"{r.final['train_seconds']:.1f}" for r in results))
    uniform, evos = by.get("uniform"), by.get("evos")
    if uniform is not None and evos is not None:
        target = uniform.final["psnr"]
        step, seconds = reach(evos.history, target, "step"), reach(evos.history, target, "train_seconds")
        table.add_row("uniform's final PSNR reached at", f"step {uniform.final['step']}",
                      "not within the budget" if step is None else f"step {step:.0f} ({seconds:.0f} s)")
    return table


def run(args: Demo) -> List[Result]:
    scene = make_scene(args.out / "scene", resolution=args.resolution, num_train=args.num_train, num_val=2,
                       num_test=args.num_test)
    console.print(f"scene: {scene} ({args.num_train} training views at {args.resolution}x{args.resolution})")
    results = []
    started = datetime.now().strftime("%Y-%m-%d_%H%M%S")  # nerfstudio's timestamp format
    for strategy in STRATEGIES:
        console.rule(f"training with {strategy} ray selection")
        results.append(train_one(scene, args, strategy, started))
    plot_path = args.out / "comparison.png"
    title = f"procedural scene ({args.num_train} views, {args.resolution} px), {args.budget.rays} rays per step"
    plot(results, plot_path, title)
    write_json(args.out / "comparison.json", {
        "budget": {"steps": args.budget.steps, "rays": args.budget.rays},
        "scene": {"resolution": args.resolution, "num_train": args.num_train, "num_test": args.num_test},
        "runs": {r.strategy: {"run_dir": str(r.run_dir), "history": r.history} for r in results},
    })
    console.print(report(results, args))
    console.print(f"PSNR vs step: {plot_path}")
    for r in results:
        console.print(f"{r.strategy} run: {r.run_dir}")
    return results


def entrypoint() -> None:
    run(tyro.cli(Demo))


if __name__ == "__main__":
    entrypoint()
