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

from typing import Literal, Optional, Tuple

import torch
from torch import Tensor

from evos_nerf.core.selection import CrossoverMethod, crossover, membership, mutate, top_k
from evos_nerf.core.store import FitnessStore, ReduceSum, UnvisitedPrior, _identity, fill

Ranking = Literal["evos", "topk", "staleness", "edges"]
"""evos: crossover of (stale-corrected) error and edge-weighted error; topk: raw error only (hard
mining); staleness: time since last trained (coverage control); edges: ground-truth Laplacian only
(edge-prior control)."""


def rank_pixels(
    store: FitnessStore,
    pool_size: int,
    ranking: Ranking,
    step: int,
    generator: torch.Generator,
    crossover_method: CrossoverMethod = "select",
    stale_correction: bool = True,
    unvisited_prior: UnvisitedPrior = "neighbourhood",
    prior_block: int = 16,
    reduce_sum: ReduceSum = _identity,
) -> Tuple[Tensor, float]:
    """(pool: ``pool_size`` flat indices, fittest first; crossover balance p). Masked pixels never enter."""
    neg_inf = torch.tensor(float("-inf"), device=store.fitness.device)
    if ranking == "staleness":
        never = store.last_step < 0
        score = torch.where(never, float(step + 1), step - store.last_step.float())
        return top_k(torch.where(store.valid, score, neg_inf), pool_size), float("nan")
    if ranking == "edges":
        return top_k(torch.where(store.valid, store.edges.float(), neg_inf), pool_size), float("nan")
    e = store.corrected_fitness(
        stale_correction and ranking == "evos", generator, reduce_sum, unvisited_prior, prior_block
    )
    if ranking == "topk":
        return top_k(torch.where(store.valid, e, neg_inf), pool_size), float("nan")
    hf = e * store.edges.float()
    p = None
    if crossover_method == "select":
        # EVOS Eq. 5 over valid pixels only (of every shard: p is the same on all ranks).
        sums = reduce_sum(torch.tensor([float(e[store.valid].sum()), float(hf[store.valid].sum())], dtype=torch.float64))
        p = float(sums[0]) / max(float(sums[0] + sums[1]), 1e-30)
    offspring = crossover(
        torch.where(store.valid, e, neg_inf), torch.where(store.valid, hf, neg_inf), pool_size, crossover_method, balance=p
    )
    return offspring.indices, offspring.balance


class CandidatePool:
    """The pool of one key iteration and what mutation may draw from (everything valid outside it)."""

    def __init__(self, store: FitnessStore, pool: Tensor) -> None:
        self.store = store
        self.indices = pool.to(store.fitness.device).long()
        self.excluded = membership(self.indices, store.num_pixels) | ~store.valid
        self.num_excluded = int(self.excluded.sum())

    @property
    def size(self) -> int:
        return int(self.indices.numel())

    @property
    def num_unselected(self) -> int:
        """Valid pixels outside the pool: what mutation draws from."""
        return self.store.num_pixels - self.num_excluded

    def draw(self, batch_size: int, num_mutants: int, generator: torch.Generator) -> Tuple[Tensor, int]:
        """(flat indices of one batch: pool members first, then mutants; number of mutants). O(batch)."""
        num_mutants = min(max(int(num_mutants), 0), batch_size)
        num_selected = min(batch_size - num_mutants, self.size)
        num_mutants = batch_size - num_selected
        selected = self.indices[mutate(self.size, num_selected, None, generator, self.indices.device)]
        mutants = mutate(
            self.store.num_pixels, num_mutants, self.excluded, generator, self.store.fitness.device, self.num_excluded
        )
        return fill(torch.cat([selected, mutants]), batch_size, generator), int(mutants.numel())

    def stalest(self, step: int, budget: int) -> Tensor:
        """Up to ``budget`` members with the oldest measurements (re-measured before ranking)."""
        if budget <= 0 or self.size == 0:
            return torch.empty(0, dtype=torch.long, device=self.indices.device)
        age = (step - self.store.last_step[self.indices]).float()
        return self.indices[top_k(age, budget)]

    def contains(self, flat: Tensor) -> Tensor:
        """Whether each flat index is a pool member (masked pixels count as outside)."""
        flat = flat.to(self.excluded.device)
        return self.excluded[flat] & self.store.valid[flat]


def optional_pool(store: FitnessStore, indices: Optional[Tensor]) -> Optional[CandidatePool]:
    return None if indices is None else CandidatePool(store, indices)
