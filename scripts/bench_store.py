"""Cost of the EVOS fitness store at scale: key-iteration ranking and per-step selection.

    python scripts/bench_store.py                        # 10^6, 10^7, 10^8 pixels on the CPU
    python scripts/bench_store.py --device cuda          # the same on a GPU

A 300-image 1080p capture has 300 * 1920 * 1080 = 6.2 * 10^8 pixels; 10^8 is the issue's bar.
Per-step selection should not grow with the number of pixels; ranking is O(pixels) by design.
Writes ``benchmarks/store_<device>.md``.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List

import torch
import tyro
from rich.console import Console
from rich.table import Table

from evos_nerf.core.store import FitnessStore, key_pool_size
from evos_nerf.io import write_text

console = Console()


@dataclass
class Args:
    sizes: List[int] = (10**6, 10**7, 10**8)  # type: ignore[assignment]
    device: str = "cpu"
    batch: int = 4096
    selection_ratio: float = 0.2
    mutation_ratio: float = 0.25
    unvisited_share: float = 0.8
    """Share of pixels never trained (a short NeRF run leaves most unvisited; they take the
    neighbourhood prior, the costliest part of ranking)."""
    out: Path = Path(__file__).resolve().parents[1] / "benchmarks"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(num_pixels: int, args: Args, device: torch.device) -> dict:
    side = 1000
    images = max(1, num_pixels // (side * side))
    store = FitnessStore([(side, side)] * images).to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    store.fitness.copy_(torch.rand(store.num_pixels, device=device).to(store.fitness.dtype))
    store.edges.copy_((torch.rand(store.num_pixels, device=device) * 2).to(store.edges.dtype))
    store.last_step.copy_(torch.randint(0, 1000, (store.num_pixels,), device=device, dtype=torch.int32))
    unvisited = torch.rand(store.num_pixels, generator=gen).to(device) < args.unvisited_share
    store.last_step.masked_fill_(unvisited, -1)
    del unvisited
    store.error_curve = [(s, 1.0 / (1 + s / 100)) for s in range(0, 1000, 10)]
    sync(device)
    start = time.perf_counter()
    store.rank(key_pool_size(store.num_pixels, args.selection_ratio), "evos", "select", True, 1000, gen)
    sync(device)
    rank_s = time.perf_counter() - start
    for _ in range(3):
        store.sample(args.batch, args.mutation_ratio, gen)
    sync(device)
    start = time.perf_counter()
    for _ in range(50):
        store.sample(args.batch, args.mutation_ratio, gen)
    sync(device)
    step_ms = (time.perf_counter() - start) / 50 * 1000
    return {
        "pixels": store.num_pixels,
        "store_mib": store.memory_bytes() / 2**20,
        "rank_s": rank_s,
        "select_ms": step_ms,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(args: Args) -> None:
    device = torch.device(args.device)
    rows = [measure(n, args, device) for n in args.sizes]
    table = Table(title=f"fitness store on {device} (batch {args.batch})")
    head = ["pixels", "store (MiB)", "key-iteration ranking (s)", "selection per step (ms)", "peak RSS (GiB)"]
    for col in head:
        table.add_column(col)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['pixels']:.1e}", f"{r['store_mib']:.0f}", f"{r['rank_s']:.2f}", f"{r['select_ms']:.2f}",
                 f"{r['peak_rss_gib']:.1f}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    text = (f"# Fitness store at scale ({device}, {torch.get_num_threads()} threads, "
            f"{args.unvisited_share:.0%} of pixels never visited)\n\n") + "\n".join(lines) + "\n"
    write_text(args.out / f"store_{device.type}.md", text)


if __name__ == "__main__":
    main(tyro.cli(Args))
