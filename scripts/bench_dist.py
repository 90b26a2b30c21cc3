"""Distributed EVOS: memory per rank, the collectives per step, and per-rank checkpoints (gloo on CPU).

    OMP_NUM_THREADS=1 python scripts/bench_dist.py                      # 1, 2, 4 gloo processes
    python scripts/bench_dist.py --world-sizes 1 2 4 8 --checkpoint-pixels 80000000

Part 1 builds rank 0's shard of a simulated 300-image 1080p capture for each world size (real
allocations, the FitnessStore the trainer uses) and reports its bytes. Part 2 runs W real gloo
processes, each with the real ``RaySelector`` on its shard of a smaller scene, through the per-step
loop (``maybe_evolve`` / ``select`` / ``observe``, 4096 rays, a key iteration every ``key_every``
steps) and reports the time per step spent in collectives and in all EVOS work. Part 3 saves each
rank's EVOS state through torch.distributed.checkpoint (``evos_nerf.nerfstudio.evos_checkpoint``)
and loads it back on the same world size, reporting the time and each rank's peak RSS (sampled
every 5 ms) above what it held before: nothing is gathered, so it should fall as 1/W.
Writes ``benchmarks/dist_cpu.md`` and ``.json``.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import tyro
from rich.console import Console

from evos_nerf import distributed
from evos_nerf.core.selector import RaySelector, SelectorConfig
from evos_nerf.core.sharding import assign_shards
from evos_nerf.core.store import FitnessStore
from evos_nerf.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
console = Console()


@dataclass
class Args:
    world_sizes: List[int] = field(default_factory=lambda: [1, 2, 4])
    memory_world_sizes: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    capture_images: int = 300
    capture_size: tuple = (1080, 1920)
    store_pixels: int = 8_000_000
    """Pixels of the simulated scene for the per-step timing (40 equal images)."""
    checkpoint_pixels: int = 40_000_000
    """Pixels of the simulated scene whose EVOS state is saved and loaded (40 equal images)."""
    batch: int = 4096
    steps: int = 300
    key_every: int = 50
    """Key interval of the simulated run (lin_dec from 100 to 50 averages ~75; 50 is pessimistic)."""
    reference_step_s: float = 4 * 0.56
    """Step time the collectives are compared with: the reduced nerfacto on this CPU takes 0.56 s
    per 1024-ray step (benchmarks/nerf_pilot.md), so ~2.24 s at 4096 rays."""
    note: str = ""
    """Conditions to record in the tables (e.g. other processes sharing the CPU)."""
    out: Path = ROOT / "benchmarks"


def memory_table(args: Args) -> List[Dict]:
    h, w = args.capture_size
    counts = [h * w] * args.capture_images
    rows = []
    for world in args.memory_world_sizes:
        shard = assign_shards(counts, world)[0]
        store = FitnessStore([(h, w)] * len(shard), torch.float16, cameras=shard, num_cameras=len(counts))
        pool_bits = (store.num_pixels + 7) // 8
        rows.append({"world_size": world, "images": len(shard), "pixels": store.num_pixels, "bytes": store.memory_bytes(),
                     "bytes_per_pixel": store.bytes_per_pixel(), "with_pool": store.memory_bytes() + pool_bits})
        del store
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed_collectives():
    """evos_nerf.distributed with the seconds spent in reductions and broadcasts counted."""
    spent = {"s": 0.0}

    def timed(fn):
        def call(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            spent["s"] += time.perf_counter() - start
            return out
        return call

    comm = SimpleNamespace(is_distributed=distributed.is_distributed, get_rank=distributed.get_rank,
                           get_world_size=distributed.get_world_size, all_reduce_sum=timed(distributed.all_reduce_sum),
                           broadcast=timed(distributed.broadcast))
    return comm, spent


def _scene(pixels: int, rank: int, world: int, comm=distributed, seed: int = 0) -> RaySelector:
    """Rank ``rank``'s RaySelector on its shard of 40 equal square images (uint8 images by reference)."""
    side = int((pixels / 40) ** 0.5)
    own = assign_shards([side * side] * 40, world)[rank]
    store = FitnessStore([(side, side)] * len(own), torch.float16, cameras=own, num_cameras=40)
    image = (torch.rand(side, side, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    selector = RaySelector(SelectorConfig(ratio=0.5), store, 4096, torch.Generator().manual_seed(seed + rank), 30000,
                           collectives=comm)
    selector.initialise(lambda local: image)
    return selector


def timing_worker(rank: int, world: int, port: int, args: Args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    comm, spent = _timed_collectives()
    selector = _scene(args.store_pixels, rank, world, comm)
    selector.config.init_interval = selector.config.end_interval = args.key_every
    gen = torch.Generator().manual_seed(rank)
    dist.barrier()
    spent["s"] = 0.0
    total = 0.0
    for step in range(args.steps):
        start = time.perf_counter()
        selector.maybe_evolve(step)
        sel = selector.select()
        selector.observe(sel.flat, torch.rand(sel.flat.numel(), generator=gen) * 1e-2, step)
        total += time.perf_counter() - start
    results[rank] = {"collective_s": spent["s"] / args.steps, "evos_s": total / args.steps,
                     "shard_pixels": selector.store.num_pixels}
    dist.barrier()
    dist.destroy_process_group()


class PeakRss:
    """Samples this process's resident memory every 5 ms while active: the peak above the start."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def checkpoint_worker(rank: int, world: int, port: int, args: Args, folder: str, results) -> None:
    from evos_nerf.nerfstudio import evos_checkpoint

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    models = Path(folder) / "nerfstudio_models"
    selector = _scene(args.checkpoint_pixels, rank, world)
    gen = torch.Generator().manual_seed(rank)
    n = selector.store.num_pixels
    selector.maybe_evolve(0)
    for _ in range(4):  # a fifth of the pixels measured, then a key iteration builds the pool
        selector.observe(torch.randint(0, n, (n // 20,), generator=gen), torch.rand(n // 20, generator=gen), 0)
    selector.maybe_evolve([s for s in range(1, 400) if selector.is_key(s)][0])
    sizes = [(s, s) for s in [int((args.checkpoint_pixels / 40) ** 0.5)] * 40]
    dist.barrier()
    with PeakRss() as save_rss:
        start = time.perf_counter()
        evos_checkpoint.save(selector, models, 1, sizes, "bench")
        save_s = time.perf_counter() - start
    written = sum(p.stat().st_size for p in (Path(folder) / "evos_state" / "step-000000001").glob(f"__{rank}_*.distcp"))
    fresh = _scene(args.checkpoint_pixels, rank, world, seed=100)
    dist.barrier()
    with PeakRss() as load_rss:
        start = time.perf_counter()
        evos_checkpoint.load(fresh, models, 1, sizes, "bench")
        load_s = time.perf_counter() - start
    exact = torch.equal(fresh.store.fitness.nan_to_num(-1), selector.store.fitness.nan_to_num(-1)) and torch.equal(
        fresh.pool.bits, selector.pool.bits)
    results[rank] = {
        "shard_pixels": n, "store_mib": selector.store.memory_bytes() / 2**20, "written_mib": written / 2**20,
        "save_s": save_s, "load_s": load_s, "exact": bool(exact),
        "save_peak_mib": (save_rss.peak - save_rss.start) / 2**20, "load_peak_mib": (load_rss.peak - load_rss.start) / 2**20,
        "save_rss_mib": save_rss.peak / 2**20, "load_rss_mib": load_rss.peak / 2**20,
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    dist.barrier()
    dist.destroy_process_group()


def _spawn(worker, world: int, *extra) -> List[Dict]:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(world, _free_port(), *extra, results), nprocs=world, join=True)
        return [dict(results[r]) for r in range(world)]


def timing_table(args: Args) -> List[Dict]:
    rows = []
    for world in args.world_sizes:
        per_rank = _spawn(timing_worker, world, args)
        collective = max(r["collective_s"] for r in per_rank)
        evos = max(r["evos_s"] for r in per_rank)
        rows.append({"world_size": world, "collective_ms": 1e3 * collective, "evos_ms": 1e3 * evos,
                     "collective_share": collective / args.reference_step_s, "evos_share": evos / args.reference_step_s,
                     "shard_pixels": max(r["shard_pixels"] for r in per_rank)})
        console.print(f"W={world}: collectives {1e3 * collective:.2f} ms/step, all EVOS work {1e3 * evos:.2f} ms/step")
    return rows


def checkpoint_table(args: Args) -> List[Dict]:
    rows = []
    for world in args.world_sizes:
        folder = tempfile.mkdtemp(prefix="evos_ckpt_bench_")
        try:
            per_rank = _spawn(checkpoint_worker, world, args, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row = {"world_size": world, "ranks": per_rank}
        for key in ("shard_pixels", "store_mib", "written_mib", "save_s", "load_s", "save_peak_mib", "load_peak_mib",
                    "save_rss_mib", "load_rss_mib"):
            row[key] = max(r[key] for r in per_rank)
        row["exact"] = all(r["exact"] for r in per_rank)
        rows.append(row)
        console.print(f"W={world}: save {row['save_s']:.2f} s (+{row['save_peak_mib']:.0f} MiB), load {row['load_s']:.2f} s "
                      f"(+{row['load_peak_mib']:.0f} MiB) per rank, exact {row['exact']}")
    return rows


def main(args: Args) -> None:
    memory = memory_table(args)
    timing = timing_table(args)
    checkpoints = checkpoint_table(args)
    h, w = args.capture_size
    lines = [
        "# Distributed EVOS (gloo on CPU)", "",
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores, one thread per process. Written by scripts/bench_dist.py.",
        *([""] + [args.note] if args.note else []), "",
        f"## Fitness store per rank: {args.capture_images} images at {w}x{h} "
        f"({args.capture_images * h * w / 1e6:.0f} M pixels), rank 0's shard", "",
        "| world size | images on rank 0 | pixels | store MiB | bytes / pixel | with pool bits, MiB |", "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['world_size']} | {r['images']} | {r['pixels']:,} | {r['bytes'] / 2**20:,.0f} | {r['bytes_per_pixel']:g} | "
              f"{r['with_pool'] / 2**20:,.0f} |" for r in memory]
    lines += [
        "", "Selection counts for the viewer or image logs add 1 byte per pixel (`--pipeline.inspection.selection-counts`).",
        "", f"## Per-step EVOS cost with {args.batch} rays per rank, {args.store_pixels / 1e6:.0f} M-pixel scene, "
        f"key iteration every {args.key_every} steps, {args.steps} steps (slowest rank)", "",
        f"Shares are of a {args.reference_step_s:.2f} s step (the reduced nerfacto on this CPU at {args.batch} rays).", "",
        "| world size | pixels per rank | collectives ms / step | share of step | all EVOS work ms / step | share of step |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['world_size']} | {r['shard_pixels']:,} | {r['collective_ms']:.3f} | {100 * r['collective_share']:.3f}% | "
              f"{r['evos_ms']:.2f} | {100 * r['evos_share']:.2f}% |" for r in timing]
    lines += [
        "", f"## Per-rank checkpoints of a {args.checkpoint_pixels / 1e6:.0f} M-pixel scene (torch.distributed.checkpoint)", "",
        "Each rank writes its own shard (fitness, epochs, pool bits per camera) and loads it back on the same world "
        "size. *Peak above* is the rank's resident memory above what it held just before the save or load "
        "(sampled every 5 ms); *peak RSS* is the rank's whole resident memory then. Slowest / largest rank.", "",
        "| world size | pixels per rank | store MiB per rank | written MiB per rank | save s | save: peak above (MiB) | "
        "save: peak RSS (MiB) | load s | load: peak above (MiB) | load: peak RSS (MiB) | exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['world_size']} | {r['shard_pixels']:,} | {r['store_mib']:.0f} | {r['written_mib']:.0f} | {r['save_s']:.2f} | "
              f"{r['save_peak_mib']:.0f} | {r['save_rss_mib']:.0f} | {r['load_s']:.2f} | {r['load_peak_mib']:.0f} | "
              f"{r['load_rss_mib']:.0f} | {'yes' if r['exact'] else 'NO'} |" for r in checkpoints]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "dist_cpu.md", text)
    write_json(args.out / "dist_cpu.json", {"memory": memory, "timing": timing, "checkpoints": checkpoints,
                                            "args": {k: str(v) for k, v in vars(args).items()}})
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
