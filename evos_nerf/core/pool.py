"""EVOS's cached ranking for rays: a candidate pool built at key iterations, drawn from per step.

How the three EVOS mechanisms map to rays (our adaptation; no public EVOS NeRF code exists):

* Sparse fitness evaluation: every trained ray refreshes its own pixel's error for free. At key
  iterations the pixels are ranked once into a pool of the fittest; per-step selection then draws
  from the pool, so its cost is O(batch), not O(pixels).
* Frequency-guided crossover: the high-frequency parent ranks pixels by ``e * h``, the error
  weighted by the ground truth's normalised squared Laplacian (mean 1). Both parents are then in
  the same units, so the adaptive balance p = mean(e) / (mean(e) + mean(e * h)) stays meaningful
  (it falls below 0.5 exactly when error concentrates on edges) instead of collapsing.
* Augmented unbiased mutation: a share of every batch is drawn uniformly from the valid pixels
  outside the pool, fresh every step, which also explores never-visited pixels.

The image path trains on the population Z_t = S_t (the fittest) + M_t (mutants) at every step.
A ray batch is a uniform draw of B rays from that same population, so the pool is S_t and the
batch's mutant share is |M_t| / |Z_t|: the two paths share ratios, schedules and counts.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple

import torch
from torch import Tensor

from evos_nerf.core.bits import bits_at, bits_of_indices, num_bytes, unpack_bits
from evos_nerf.core.selection import CrossoverMethod, crossover, mutate
from evos_nerf.core.store import FitnessStore, ReduceSum, UnvisitedPrior, _identity, fill
from evos_nerf.core.threshold import top_k_mask

Ranking = Literal["evos", "topk", "staleness", "edges"]
"""evos: crossover of (stale-corrected) error and edge-weighted error; topk: raw error only (hard
mining); staleness: epochs since last trained (coverage control); edges: ground-truth Laplacian only
(edge-prior control)."""


def rank_pixels(
    store: FitnessStore,
    pool_size: int,
    ranking: Ranking,
    generator: torch.Generator,
    crossover_method: CrossoverMethod = "select",
    stale_correction: bool = True,
    unvisited_prior: UnvisitedPrior = "neighbourhood",
    prior_block: int = 16,
    reduce_sum: ReduceSum = _identity,
) -> Tuple[Tensor, float]:
    """(pool: ``pool_size`` flat indices in ascending order; crossover balance p). Masked pixels never enter.

    Each top-k is a sampled threshold and one pass (``evos_nerf.core.threshold``): the same set as a
    full top-k up to ties, which are broken uniformly at random with ``generator``.
    """
    if ranking == "staleness":
        return top_k_mask(_staleness(store), pool_size, generator=generator).nonzero().squeeze(1), math.nan
    if ranking == "edges":
        score = torch.empty(store.num_pixels, dtype=torch.float32, device=store.fitness.device)
        for local in range(store.num_images):
            start, end = store.image_range(local)
            score[start:end] = store.edges(local)
            score[start:end].masked_fill_(torch.isnan(store.fitness[start:end]), -math.inf)
        return top_k_mask(score, pool_size, generator=generator).nonzero().squeeze(1), math.nan
    with_edges = ranking == "evos" and crossover_method != "none"
    e, hf, sums = store.ranking_scores(
        stale_correction and ranking == "evos", reduce_sum, unvisited_prior, prior_block, with_edges
    )
    if ranking == "topk" or hf is None:
        return top_k_mask(e, pool_size, generator=generator).nonzero().squeeze(1), math.nan
    # EVOS Eq. 5 over valid pixels only (of every shard: p is the same on all ranks).
    totals = reduce_sum(torch.tensor(sums, dtype=torch.float64))
    p = float(totals[0]) / max(float(totals[0] + totals[1]), 1e-30)
    if crossover_method == "add":
        hf.add_(e)  # the score e + l, in place: h is not needed past this point
        return top_k_mask(hf, pool_size, generator=generator).nonzero().squeeze(1), p
    offspring = crossover(e, hf, pool_size, crossover_method, balance=p, ordered=False, generator=generator)
    return offspring.indices, offspring.balance


def _staleness(store: FitnessStore) -> Tensor:
    """Epochs since each pixel was measured (the current epoch for never-measured ones); -inf where masked."""
    score = torch.empty(store.num_pixels, dtype=torch.float32, device=store.fitness.device)
    for local in range(store.num_images):
        start, end = store.image_range(local)
        out = score[start:end]
        torch.sub(store.current_epoch, store.epoch[start:end], out=out)
        out.masked_fill_(torch.isnan(store.fitness[start:end]), -math.inf)
    return score


class CandidatePool:
    """The pool of one key iteration and what mutation may draw from (everything valid outside it).

    Members are kept in ascending flat order (uniform draws do not care about order, and a pool
    restored from its membership bits is then identical), as int32 when the shard allows, plus one
    membership bit per pixel for O(1) tests: about 1/8 + 4 * pool share bytes per pixel.
    """

    def __init__(self, store: FitnessStore, pool: Tensor, is_sorted: bool = False) -> None:
        self.store = store
        device = store.fitness.device
        pool = pool.to(device).long()
        if not is_sorted:
            pool = torch.sort(pool).values
        dtype = torch.int32 if store.num_pixels < 2**31 else torch.long
        self.indices = pool.to(dtype)
        """Member flat indices, ascending."""
        self.bits = bits_of_indices(pool, store.num_pixels)
        """Packed membership (``evos_nerf.core.bits``)."""
        self.num_excluded = self.size + (store.num_pixels - store.num_valid)

    @property
    def size(self) -> int:
        return int(self.indices.numel())

    @property
    def num_unselected(self) -> int:
        """Valid pixels outside the pool: what mutation draws from."""
        return self.store.num_pixels - self.num_excluded

    def excluded_at(self, flat: Tensor) -> Tensor:
        """Whether mutation may not draw each pixel (a pool member or masked out): O(R)."""
        flat = flat.to(self.bits.device).long()
        return bits_at(self.bits, flat) | self.store.invalid_at(flat)

    def draw(self, batch_size: int, num_mutants: int, generator: torch.Generator) -> Tuple[Tensor, int]:
        """(flat indices of one batch: pool members first, then mutants; number of mutants). O(batch)."""
        num_mutants = min(max(int(num_mutants), 0), batch_size)
        num_selected = min(batch_size - num_mutants, self.size)
        num_mutants = batch_size - num_selected
        device = self.store.fitness.device
        selected = self.indices[mutate(self.size, num_selected, None, generator, device)].long()
        mutants = mutate(self.store.num_pixels, num_mutants, self.excluded_at, generator, device, self.num_excluded)
        return fill(torch.cat([selected, mutants]), batch_size, generator), int(mutants.numel())

    def stalest(self, budget: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Up to ``budget`` members measured in the oldest epochs (re-measured before ranking); ties at random."""
        if budget <= 0 or self.size == 0:
            return torch.empty(0, dtype=torch.long, device=self.indices.device)
        members = self.indices.long()
        age = self.store.current_epoch - self.store.epoch[members].int()
        return members[top_k_mask(age, budget, generator=generator)]

    def contains(self, flat: Tensor) -> Tensor:
        """Whether each flat index is a pool member."""
        return bits_at(self.bits, flat)

    def image_bits(self, local: int) -> Tensor:
        """Packed membership of one local image's pixels (a checkpoint entry). O(members in the image)."""
        start, end = self.store.image_range(local)
        members = self.indices.long()
        lo, hi = (int(torch.searchsorted(members, torch.tensor([b], device=members.device))) for b in (start, end))
        return bits_of_indices(members[lo:hi] - start, end - start)

    @classmethod
    def from_image_bits(cls, store: FitnessStore, bits: list) -> "CandidatePool":
        """The pool whose membership of local image i is ``bits[i]`` (the inverse of ``image_bits``)."""
        parts = []
        for local, packed in enumerate(bits):
            start, end = store.image_range(local)
            if packed.numel() != num_bytes(end - start):
                raise ValueError(f"pool bits of image {local} have {packed.numel()} bytes, expected {num_bytes(end - start)}")
            members = unpack_bits(packed.to(store.fitness.device), end - start).nonzero().squeeze(1)
            parts.append(members + start)
        return cls(store, torch.cat(parts), is_sorted=True)
