"""Distributed EVOS: fitness memory per rank, and what the EVOS collectives cost per step.

    python scripts/bench_dist.py                       # 1, 2, 4 gloo processes on this CPU
    python scripts/bench_dist.py --world-sizes 1 2 4 8 --store-pixels 20000000

Part 1 builds rank 0's shard of a simulated 300-image 1080p capture for each world size (real
allocations, the same FitnessStore the trainer uses) and reports its bytes. Part 2 runs W real
gloo processes, each holding its shard of a smaller simulated scene, through the per-step EVOS
work of ``EvosDataManager`` with a 4096-ray batch: the controls broadcast (the only per-step
collective: selection and fitness write-back are local because each rank trains only pixels it
owns), O(batch) selection, the write-back, and at key iterations the ranking with its agreed
crossover balance, the mutation-scale and statistics all-reduces. It reports time per step in
collectives and in total, against the measured step time of the reduced nerfacto.
Writes ``benchmarks/dist_cpu.md`` and ``.json``.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import tyro
from rich.console import Console
from rich.table import Table

from evos_nerf import distributed
from evos_nerf.core.fitness_stats import summarise
from evos_nerf.core.schedules import is_key_iteration
from evos_nerf.core.sharding import assign_shards, mutant_count, mutation_scale
from evos_nerf.core.store import FitnessStore, key_pool_size
from evos_nerf.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
console = Console()


@dataclass
class Args:
    world_sizes: List[int] = (1, 2, 4)  # type: ignore[assignment]
    memory_world_sizes: List[int] = (1, 2, 4, 8)  # type: ignore[assignment]
    capture_images: int = 300
    capture_size: tuple = (1080, 1920)
    store_pixels: int = 8_000_000
    """Pixels of the simulated scene for the timing part (split over 40 equal images)."""
    batch: int = 4096
    steps: int = 300
    key_every: int = 50
    """Key interval of the simulated run (lin_dec from 100 to 50 averages ~75; 50 is pessimistic)."""
    reference_step_s: float = 4 * 0.56
    """Step time the collectives are compared with: the reduced nerfacto on this CPU takes 0.56 s
    per 1024-ray step (benchmarks/nerf_pilot.md), so ~2.24 s at 4096 rays."""
    out: Path = ROOT / "benchmarks"


def memory_table(args: Args) -> List[Dict]:
    h, w = args.capture_size
    counts = [h * w] * args.capture_images
    rows = []
    for world in args.memory_world_sizes:
        shard = assign_shards(counts, world)[0]
        store = FitnessStore([(h, w)] * len(shard), torch.float16, cameras=shard, num_cameras=len(counts))
        rows.append({"world_size": world, "images": len(shard), "pixels": store.num_pixels,
                     "bytes": store.memory_bytes(), "bytes_per_pixel": store.memory_bytes() / store.num_pixels})
        del store
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Timed:
    """Wraps a reduce function to accumulate the seconds spent inside collectives."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, t):
        start = time.perf_counter()
        out = self.fn(t)
        self.seconds += time.perf_counter() - start
        return out


def worker(rank: int, world: int, port: int, args: Args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    images = 40
    side = int((args.store_pixels / images) ** 0.5)
    counts = [side * side] * images
    own = assign_shards(counts, world)[rank]
    store = FitnessStore([(side, side)] * len(own), torch.float16, cameras=own, num_cameras=images)
    gen = torch.Generator().manual_seed(rank)
    reduce = Timed(distributed.all_reduce_sum)
    controls = torch.tensor([0.2, 0.25, 0.0], dtype=torch.float64)
    scale, total_s = 1.0, 0.0
    dist.barrier()
    for step in range(args.steps):
        start = time.perf_counter()
        c0 = time.perf_counter()
        controls = distributed.broadcast(controls)  # the per-step collective
        reduce.seconds += time.perf_counter() - c0
        if is_key_iteration(step + 1, args.steps, "fixed", args.key_every, args.key_every):
            store.rank(key_pool_size(int(store.valid.sum()), 0.2), "evos", "select", True, step, gen, reduce_sum=reduce)
            unselected = reduce(torch.tensor([float(store.num_unselected)], dtype=torch.float64))
            scale = mutation_scale(store.num_unselected, int(unselected[0]), world)
            summarise(store, reduce)
        n = mutant_count(args.batch, 0.25, scale, gen)
        flat, _ = store.sample(args.batch, 0.25, gen, num_mutants=n)
        store.update(flat, torch.rand(flat.numel(), generator=gen) * 1e-2, step)
        total_s += time.perf_counter() - start
    results[rank] = {"collective_s": reduce.seconds / args.steps, "evos_s": total_s / args.steps,
                     "shard_pixels": store.num_pixels}
    dist.barrier()
    dist.destroy_process_group()


def timing_table(args: Args) -> List[Dict]:
    rows = []
    for world in args.world_sizes:
        with mp.Manager() as manager:
            results = manager.dict()
            mp.spawn(worker, args=(world, _free_port(), args, results), nprocs=world, join=True)
            per_rank = [results[r] for r in range(world)]
        collective = max(r["collective_s"] for r in per_rank)
        evos = max(r["evos_s"] for r in per_rank)
        rows.append({"world_size": world, "collective_ms": 1e3 * collective, "evos_ms": 1e3 * evos,
                     "collective_share": collective / args.reference_step_s, "evos_share": evos / args.reference_step_s,
                     "shard_pixels": max(r["shard_pixels"] for r in per_rank)})
        console.print(f"W={world}: collectives {1e3 * collective:.2f} ms/step, all EVOS work {1e3 * evos:.2f} ms/step")
    return rows


def main(args: Args) -> None:
    memory = memory_table(args)
    timing = timing_table(args)
    h, w = args.capture_size
    lines = [
        "# Distributed EVOS (gloo on CPU)", "",
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores. Written by scripts/bench_dist.py.", "",
        f"## Fitness store per rank: {args.capture_images} images at {w}x{h} "
        f"({args.capture_images * h * w / 1e6:.0f} M pixels), rank 0's shard", "",
        "| world size | images on rank 0 | pixels | store MiB | bytes / pixel |", "|---|---|---|---|---|",
    ]
    lines += [f"| {r['world_size']} | {r['images']} | {r['pixels']:,} | {r['bytes'] / 2**20:,.0f} | {r['bytes_per_pixel']:.2f} |"
              for r in memory]
    lines += [
        "", f"## Per-step EVOS cost with {args.batch} rays per rank, {args.store_pixels / 1e6:.0f} M-pixel scene, "
        f"key iteration every {args.key_every} steps, {args.steps} steps (slowest rank)", "",
        f"Shares are of a {args.reference_step_s:.2f} s step (the reduced nerfacto on this CPU at {args.batch} rays).", "",
        "| world size | pixels per rank | collectives ms / step | share of step | all EVOS work ms / step | share of step |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['world_size']} | {r['shard_pixels']:,} | {r['collective_ms']:.3f} | {100 * r['collective_share']:.3f}% | "
              f"{r['evos_ms']:.2f} | {100 * r['evos_share']:.2f}% |" for r in timing]
    text = "\n".join(lines) + "\n"
    table = Table(title="EVOS collectives per step")
    for col in ("W", "collectives ms/step", "share", "EVOS ms/step"):
        table.add_column(col)
    for r in timing:
        table.add_row(str(r["world_size"]), f"{r['collective_ms']:.3f}", f"{100 * r['collective_share']:.3f}%", f"{r['evos_ms']:.2f}")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "dist_cpu.md", text)
    write_json(args.out / "dist_cpu.json", {"memory": memory, "timing": timing, "args": {k: str(v) for k, v in vars(args).items()}})
    console.print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
