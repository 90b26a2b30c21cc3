"""``evos-nerf-demo``: the main job on an embedded default, with no download and no data on disk.

It writes the package's procedural blender scene, trains ``evos-nerf-blender`` on it for a short
CPU budget through nerfstudio's own training loop, evaluates the test split as ``ns-eval`` does,
and prints PSNR / SSIM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.table import Table

from evos_nerf.nerfstudio.presets import Budget, blender_run_config
from evos_nerf.scene import make_scene

console = Console()


@dataclass
class Demo:
    out: Path = Path("outputs/demo-nerf")
    resolution: int = 64
    """Side of the generated scene's images, in pixels."""
    num_train: int = 24
    strategy: Literal["evos", "uniform", "topk", "staleness", "edges"] = "evos"
    budget: Budget = field(default_factory=lambda: Budget(steps=300, rays=1024))
    seed: int = 42


def run(args: Demo) -> dict:
    from nerfstudio.scripts.eval import ComputePSNR
    from nerfstudio.scripts.train import main as ns_train

    scene = make_scene(args.out / "scene", resolution=args.resolution, num_train=args.num_train, num_val=4, num_test=4)
    console.print(f"scene: {scene} ({args.num_train} training views at {args.resolution}x{args.resolution})")
    config = blender_run_config(scene, args.out / "runs", args.budget, args.strategy, args.seed)
    ns_train(config)
    run_dir = config.get_base_dir()
    result_path = run_dir / "eval.json"
    ComputePSNR(load_config=run_dir / "config.yml", output_path=result_path).main()
    results = json.loads(result_path.read_text())["results"]
    table = Table(title=f"evos-nerf ({args.strategy}), {args.budget.steps} steps on the test split")
    for key in ("psnr", "ssim", "lpips"):
        value = results.get(key)
        table.add_row(key.upper(), "unavailable offline" if value is None else f"{value:.3f}")
    console.print(table)
    console.print(f"run folder: {run_dir}")
    return results


def entrypoint() -> None:
    run(tyro.cli(Demo))


if __name__ == "__main__":
    entrypoint()
