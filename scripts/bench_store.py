"""Cost of EVOS selection at capture scale: bytes per pixel, key-iteration ranking, per-step selection.

    OMP_NUM_THREADS=1 python scripts/bench_store.py                 # 10^6, 10^7, 10^8 and 6.2*10^8 / 8 ranks
    OMP_NUM_THREADS=1 python scripts/bench_store.py --sizes 1e6 1e7  # a quick run

Every size runs in its own process (so its peak RSS is its own) and drives the real
``RaySelector``: ``observe`` writes measurements in large batches over a few epochs (about
``measured_share`` of the pixels, the rest never visited so the neighbourhood prior runs on most of
the store), ``maybe_evolve`` runs the key iterations (closing the epoch, ranking every pixel with
the frequency-guided crossover, building the pool, refreshing the statistics), and ``select`` +
``observe`` time the per-step work at a 4096-ray batch. The training images are uint8 and served by
reference (``FitnessStore.images``), as a dataset cache would; they are counted in the RSS.

``6.2e8/8`` is one rank's shard of a 300-image 1080p capture on 8 ranks (38 images, 7.9*10^7
pixels), with the cross-shard reductions stubbed (they move a few numbers per key iteration).
Writes ``benchmarks/store_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"1e6": 10**6, "1e7": 10**7, "1e8": 10**8, "6.2e8/8": None}


@dataclass
class Args:
    sizes: List[str] = field(default_factory=lambda: list(LABELS))
    """Sizes to measure: 1e6, 1e7, 1e8 (images of 1000x1000) and 6.2e8/8 (one of 8 ranks' 1080p shard)."""
    device: str = "cpu"
    batch: int = 4096
    ratio: float = 0.5
    """Selection ratio r0 (the pool is r0 - alpha r0 = 25% of the pixels with the default mutation)."""
    strategy: str = "evos"
    """The sampler whose store work is timed: ``evos``, or a baseline (``uniform``, ``errormap``,
    ``softmining``, ``topk``) so a GPU's per-step cost can be compared on one card. A baseline's
    report is ``store_<device>_<strategy>``."""
    measured_share: float = 0.2
    """Share of pixels measured before the timed key iteration (written over three epochs)."""
    steps: int = 50
    """Timed per-step selections (select + observe)."""
    profile: int = 0
    """Then profile this many more steps with torch.profiler and write the op table to
    ``store_<device>_<size>_profile.txt``: on a CUDA store, the kernel launches and host reads
    (``aten::item``, ``aten::nonzero``, device-to-host ``aten::copy_``) its per-step time is made of."""
    note: str = ""
    """Conditions to record in the table (e.g. other processes sharing the CPU)."""
    out: Path = ROOT / "benchmarks"
    worker: str = ""
    """Internal: measure one size in this process and print its JSON."""


def _shard_stub(world: int):
    """The collectives of rank 0 of ``world`` ranks, with the reductions stubbed (identity)."""
    return SimpleNamespace(
        is_distributed=lambda: False, get_rank=lambda: 0, get_world_size=lambda: world,
        all_reduce_sum=lambda t: t, broadcast=lambda t, src=0: t,
    )


def _images(height: int, width: int, count: int = 4) -> List[torch.Tensor]:
    """A few smooth uint8 images with edges (served round-robin: the ranking reads each image once)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        small = torch.rand(1, 3, height // 16, width // 16, generator=gen)
        image = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
        out.append((image * 255).to(torch.uint8).contiguous())
    return out


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(label: str, args: Args) -> Dict:
    from evos_nerf import distributed
    from evos_nerf.core import selector as selector_module
    from evos_nerf.core.selector import RaySelector, SelectorConfig
    from evos_nerf.core.sharding import assign_shards
    from evos_nerf.core.store import FitnessStore

    device = torch.device(args.device)
    base_rss = _rss_gib()
    if label == "6.2e8/8":
        height, width, world = 1080, 1920, 8
        cameras = assign_shards([height * width] * 300, world)[0]
        collectives, num_cameras = _shard_stub(world), 300
    else:
        height = width = 1000
        cameras = list(range(max(1, LABELS[label] // (height * width))))
        collectives, num_cameras = distributed, len(cameras)
    images = _images(height, width)
    store = FitnessStore([(height, width)] * len(cameras), cameras=cameras, num_cameras=num_cameras).to(device)
    gen = torch.Generator().manual_seed(0)
    config = SelectorConfig(strategy=args.strategy, ratio=args.ratio, init_interval=100, end_interval=50)
    selector = RaySelector(config, store, args.batch, gen, 30000, collectives=collectives)
    selector.exact_timers = True  # a CUDA store's ranking time is then its kernels', not their launch
    selector.initialise(lambda local: images[local % len(images)])
    n = store.num_pixels
    chunk = 1 << 20
    key_steps = [s for s in range(400) if selector.is_key(s)][:4]  # 0, 100, 199, 297
    # CPU time of this (single-threaded) process as well as wall time: other processes may share the CPU.
    ranking_cpu = {"s": 0.0}
    rank = selector_module.rank_pixel_mask

    def timed_rank(*a, **k):
        start = time.process_time()
        out = rank(*a, **k)
        ranking_cpu["s"] += time.process_time() - start
        return out

    selector_module.rank_pixel_mask = timed_rank
    timings = []
    for epoch, step in enumerate(key_steps):
        before, ranking_cpu["s"] = selector.selection_seconds, 0.0
        start, cpu = time.perf_counter(), time.process_time()
        selector.maybe_evolve(step)  # the real key iteration: close the epoch, rank, pool, statistics
        timings.append({"key_iteration_s": time.perf_counter() - start, "ranking_s": selector.selection_seconds - before,
                        "key_iteration_cpu_s": time.process_time() - cpu, "ranking_cpu_s": ranking_cpu["s"]})
        if epoch == len(key_steps) - 1:
            break
        # One epoch of measurements: errors that fall over training, higher on some images' regions.
        todo = int(n * args.measured_share / 3)
        while todo > 0:
            count, todo = min(chunk, todo), todo - chunk
            flat = torch.randint(0, n, (count,), generator=gen)
            errors = torch.rand(count, generator=gen) ** 2 * (1.0 - 0.2 * epoch)
            selector.observe(flat, errors, step)
    per_step = []
    for step in range(key_steps[-1] + 1, key_steps[-1] + 1 + args.steps):
        start = time.perf_counter()
        _train_step(selector, step)
        per_step.append(time.perf_counter() - start)
    if args.profile:
        _profile_steps(selector, key_steps[-1] + 1 + args.steps, args,
                       f"{device.type}_{label.replace('/', 'of')}{_baseline_suffix(args)}")
    last = timings[-1]
    return {
        "label": label,
        "pixels": n,
        "images": len(cameras),
        "measured_share": store.num_measured / n,
        "pool_share": selector.pool.size / n if selector.pool is not None else 0.0,
        "bytes_per_pixel": store.bytes_per_pixel(),
        "selector_bytes_per_pixel": selector.memory_bytes() / n,
        "ranking_s": last["ranking_s"],
        "key_iteration_s": last["key_iteration_s"],
        "ranking_cpu_s": last["ranking_cpu_s"],
        "key_iteration_cpu_s": last["key_iteration_cpu_s"],
        "first_key_iteration_s": timings[1]["key_iteration_s"],
        "select_ms": 1e3 * sorted(per_step)[len(per_step) // 2],
        "peak_rss_gib": _rss_gib(),
        "baseline_rss_gib": base_rss,
        "threads": torch.get_num_threads(),
    }


def _baseline_suffix(args: Args) -> str:
    """EVOS's reports keep their names; a baseline's add ``_<strategy>``."""
    return "" if args.strategy == "evos" else f"_{args.strategy}"


def _train_step(selector, step: int) -> None:
    """One step's sampler work as training does it, with random errors for the selected rays."""
    selector.maybe_evolve(step)
    sel = selector.select()
    # Errors made on the store's device, as a model's are: host errors would add a copy a step.
    selector.observe(sel.flat, torch.rand(sel.flat.numel(), device=selector.store.fitness.device), step)


def _profile_steps(selector, first: int, args: Args, name: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from evos_nerf.io import write_text

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if selector._store_on_cuda() else [])
    with profile(activities=activities) as prof:
        for step in range(first, first + args.profile):
            _train_step(selector, step)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    write_text(args.out / f"store_{name}_profile.txt", f"{args.profile} steps of select + observe\n\n{table}\n")


def main(args: Args) -> None:
    if args.worker:
        print("RESULT " + json.dumps(measure(args.worker, args)), flush=True)
        return
    from evos_nerf.core.selector import SelectorConfig

    try:  # an unknown sampler: one line, before any worker starts
        SelectorConfig(strategy=args.strategy).validate(prefix="--")
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    rows = []
    for label in args.sizes:
        if label not in LABELS:
            raise SystemExit(f"error: unknown size {label!r}; expected one of {', '.join(LABELS)}")
        cmd = [sys.executable, __file__, "--worker", label, "--device", args.device, "--batch", str(args.batch),
               "--ratio", str(args.ratio), "--strategy", args.strategy, "--measured-share", str(args.measured_share), "--steps", str(args.steps),
               "--profile", str(args.profile), "--out", str(args.out)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if result.returncode != 0 or not lines:
            raise SystemExit(f"error: size {label} failed:\n{result.stderr[-3000:]}")
        row = json.loads(lines[-1][len("RESULT "):])
        rows.append(row)
        print(f"{label}: ranking {row['ranking_s']:.2f} s ({row['ranking_cpu_s']:.2f} s CPU), "
              f"key iteration {row['key_iteration_s']:.2f} s, "
              f"select {row['select_ms']:.2f} ms, peak RSS {row['peak_rss_gib']:.2f} GiB", flush=True)
    write(rows, args)


def write(rows: List[Dict], args: Args) -> None:
    from evos_nerf.io import write_json, write_text

    device = torch.device(args.device).type
    stem = f"store_{device}{_baseline_suffix(args)}"
    threads = rows[0]["threads"] if rows else torch.get_num_threads()
    data = {
        "bytes_per_pixel": rows[0]["bytes_per_pixel"] if rows else 4,
        "bytes_per_pixel_with_selection_counts": 5,
        "device": device,
        "threads": threads,
        "note": args.note,
        "strategy": args.strategy,
        "sizes": {r["label"]: r for r in rows},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{stem}.json", data)
    head = ["pixels", "store bytes / pixel", "with pool", "ranking (s)", "ranking, CPU (s)", "whole key iteration (s)",
            "whole key iteration, CPU (s)", "first key iteration (s)", "select + observe per step (ms)", "peak RSS (GiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"{r['pixels']:.2e}" + (" (one of 8 ranks of 6.2e8)" if r["label"] == "6.2e8/8" else "")
        lines.append(f"| {name} | {r['bytes_per_pixel']:g} | {r['selector_bytes_per_pixel']:.2f} | {r['ranking_s']:.2f} | "
                     f"{r['ranking_cpu_s']:.2f} | {r['key_iteration_s']:.2f} | {r['key_iteration_cpu_s']:.2f} | "
                     f"{r['first_key_iteration_s']:.2f} | {r['select_ms']:.2f} | {r['peak_rss_gib']:.2f} |")
    text = "\n".join([
        f"# Fitness store at scale ({device}, {threads} thread{'s' if threads != 1 else ''}, strategy {args.strategy})", "",
        "Written by `scripts/bench_store.py`: the real `RaySelector` (ratio "
        f"{args.ratio}, pool = 25% of the pixels, batch {args.batch}), about {args.measured_share:.0%} of the pixels "
        "measured over three epochs and the rest never visited. *Ranking* is the pool's construction at a key "
        "iteration (stale correction, neighbourhood prior, edge prior from the images, crossover by sampled "
        "thresholds, membership bits); the *whole key iteration* adds closing the epoch and the statistics; *CPU* "
        "is the process's own CPU time for the same work (one thread: what it costs when it has a core to itself); the "
        "*first* is the first ranking in the process, which also pays the page faults of its fresh buffers. "
        "Peak RSS includes the Python/torch baseline (~0.8 GiB) and the uint8 training images the edge prior is "
        "derived from (served by reference, 3 bytes per pixel of the distinct images). *with pool* adds the pool's "
        "membership bits (1/8 byte per pixel). Selection counts for inspection add 1 byte per pixel. While it "
        "ranks, a key iteration also holds the fp32 error and edge-weighted error and three masks: about 11 bytes "
        "per pixel, freed when the pool is built.",
        "", *lines, "",
    ] + ([args.note, ""] if args.note else []))
    write_text(args.out / f"{stem}.md", text)
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))
