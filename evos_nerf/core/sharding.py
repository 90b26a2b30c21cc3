"""How the per-pixel fitness is split over ranks, and how mutation stays unbiased across shards.

Sharding is by whole image: a rank caches, ranks and trains only its own images' pixels, so
per-step selection and fitness write-back need no communication at all (every ray a rank trains
is a pixel it owns). Images go to ranks largest-first onto the least-loaded rank, which for
equal-size images is plain round-robin and keeps shards within one image of each other.

Each rank builds its candidate pool from its own shard (top ``selection_ratio`` of its pixels).
Mutation must stay uniform over the *whole* dataset, so a rank's mutant count is scaled by its
share of all unselected pixels: with ``U_r`` unselected pixels on rank r and ``U`` in total, each
rank draws ``B * m * W * U_r / U`` mutants in expectation (stochastically rounded), which gives
every unselected pixel in the dataset the same probability per step.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch

from evos_nerf.errors import UserInputError


def assign_shards(pixel_counts: Sequence[int], world_size: int) -> List[List[int]]:
    """Camera indices per rank: disjoint, covering every camera, balanced by pixel count."""
    if world_size < 1:
        raise UserInputError(f"world size must be >= 1, got {world_size}")
    if len(pixel_counts) < world_size:
        raise UserInputError(
            f"{len(pixel_counts)} training images cannot be sharded over {world_size} ranks: "
            "every rank needs at least one image (use fewer processes)"
        )
    loads = [0] * world_size
    shards: List[List[int]] = [[] for _ in range(world_size)]
    for camera in sorted(range(len(pixel_counts)), key=lambda i: (-int(pixel_counts[i]), i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shards[rank].append(camera)
        loads[rank] += int(pixel_counts[camera])
    return [sorted(s) for s in shards]


def mutation_scale(unselected_here: int, unselected_total: int, world_size: int) -> float:
    """Factor on a rank's mutant count that makes mutation uniform over all shards (1 on one rank)."""
    if world_size == 1 or unselected_total <= 0:
        return 1.0
    return world_size * unselected_here / unselected_total


def mutant_count(batch_size: int, share: float, scale: float, generator: torch.Generator) -> int:
    """Mutants in one batch. Stochastic rounding keeps the expectation exact when ``scale != 1``."""
    expected = min(float(batch_size), batch_size * share * scale)
    if scale == 1.0:
        return int(round(expected))
    low = math.floor(expected)
    frac = expected - low
    bump = frac > 0 and float(torch.rand((), generator=generator)) < frac
    return int(low + bump)
