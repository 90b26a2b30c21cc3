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
from typing import TYPE_CHECKING, Callable, List, Literal, Optional, Tuple

import torch
from torch import Tensor

from evos_nerf.core.bits import bits_at, bits_of_indices, num_bytes, pack_bits, unpack_bits
from evos_nerf.core.neighbourhood import Blocks
from evos_nerf.core.selection import CrossoverMethod, mutate, unordered_crossover_mask
from evos_nerf.core.store import CrossoverPrior, Fitness, FitnessStore, ReduceSum, UnvisitedPrior, _identity, fill
from evos_nerf.core.threshold import top_k_mask

if TYPE_CHECKING:
    from evos_nerf.core.crossview import ViewBlocks

Ranking = Literal["evos", "topk", "staleness", "edges"]
"""evos: crossover of (stale-corrected) error and edge-weighted error; topk: raw error only (hard
mining); staleness: epochs since last trained (coverage control); edges: ground-truth Laplacian only
(edge-prior control)."""


def rank_pixels(
    store: FitnessStore, pool_size: int, ranking: Ranking, generator: torch.Generator, *args, **kwargs
) -> Tuple[Tensor, float]:
    """``rank_pixel_mask`` as (pool: ``pool_size`` flat indices in ascending order; crossover balance p)."""
    mask, p = rank_pixel_mask(store, pool_size, ranking, generator, *args, **kwargs)
    return mask.nonzero().squeeze(1), p


def rank_pixel_mask(
    store: FitnessStore,
    pool_size: int,
    ranking: Ranking,
    generator: torch.Generator,
    crossover_method: CrossoverMethod = "select",
    stale_correction: bool = True,
    unvisited_prior: UnvisitedPrior = "neighbourhood",
    prior_block: Blocks = 16,
    reduce_sum: ReduceSum = _identity,
    fitness: Fitness = "error",
    crossover_prior: CrossoverPrior = "edges",
    shrinkage: float = 0.0,
    evidence: Optional[ViewBlocks] = None,
    trim: int = 0,
) -> Tuple[Tensor, float]:
    """The pool as a [P] bool mask (what it keeps; listing the members would cost a pass), and the
    crossover balance p (nan for rankings without crossover). Masked pixels never enter. ``trim``
    (evos without crossover): the pool is the ``pool_size`` fittest after the ``trim`` fittest.

    Each top-k is a sampled threshold and one pass (``evos_nerf.core.threshold``): the same set as a
    full top-k up to ties, which are broken uniformly at random with ``generator``.
    """
    if ranking == "staleness":
        return top_k_mask(_staleness(store), pool_size, generator=generator), math.nan
    if ranking == "edges":
        score = torch.empty(store.num_pixels, dtype=torch.float32, device=store.fitness.device)
        for local in range(store.num_images):
            start, end = store.image_range(local)
            score[start:end] = store.edges(local)
            score[start:end].masked_fill_(torch.isnan(store.fitness[start:end]), -math.inf)
        return top_k_mask(score, pool_size, generator=generator), math.nan
    with_edges = ranking == "evos" and crossover_method != "none"
    if trim > 0 and with_edges:
        raise ValueError("a trimmed pool is defined for a ranking without crossover")
    e, hf, sums = store.ranking_scores(
        stale_correction and ranking == "evos", reduce_sum, unvisited_prior, prior_block, with_edges, fitness,
        crossover_prior, shrinkage if ranking == "evos" else 0.0, evidence,
    )
    if ranking == "topk" or hf is None:
        return trimmed_top_k_mask(e, pool_size, trim if ranking == "evos" else 0, generator), math.nan
    # EVOS Eq. 5 over valid pixels only (of every shard: p is the same on all ranks).
    totals = reduce_sum(torch.tensor(sums, dtype=torch.float64))
    p = float(totals[0]) / max(float(totals[0] + totals[1]), 1e-30)
    if crossover_method == "add":
        hf.add_(e)  # the score e + l, in place: h is not needed past this point
        del e
        return top_k_mask(hf, pool_size, generator=generator), p
    if crossover_method != "select":
        raise ValueError(f"unknown crossover method {crossover_method!r}")
    return unordered_crossover_mask(e, hf, pool_size, p, generator).chosen, p


def trimmed_top_k_mask(score: Tensor, k: int, trim: int, generator: torch.Generator) -> Tensor:
    """The ``k`` largest scores after the ``trim`` largest: ranks trim + 1 to trim + k.

    The trimmed set is chosen first and the pool among the rest, so that ties (every never-visited
    pixel of a block shares its block's estimate) cannot put a pixel in both.
    """
    if trim <= 0:
        return top_k_mask(score, k, generator=generator)
    rest = top_k_mask(score, trim, generator=generator).logical_not_()
    return top_k_mask(score, k, within=rest, generator=generator, out=rest)


def _staleness(store: FitnessStore) -> Tensor:
    """Epochs since each pixel was measured (the current epoch for never-measured ones); -inf where masked."""
    score = torch.empty(store.num_pixels, dtype=torch.float32, device=store.fitness.device)
    for local in range(store.num_images):
        start, end = store.image_range(local)
        out = score[start:end]
        torch.sub(store.current_epoch, store.epoch[start:end], out=out)
        out.masked_fill_(torch.isnan(store.fitness[start:end]), -math.inf)
    return score


PoolDraw = Literal["uniform", "fitness", "annealed"]
"""How members are drawn at each step: uniform (EVOS: the pool is the population S_t), fitness
(in proportion to each member's live importance, ``CandidatePool.sample_by``), or annealed (the
importance raised to a power that the ratio schedule takes from 1 to 0, i.e. to uniform)."""
Importance = Callable[[Tensor], Tensor]
"""Flat indices [R] -> their sampling importance [R] (>= 0)."""
POOL_CANDIDATES = 8
"""Uniform candidates per member drawn by importance (``CandidatePool.sample_by``); the selector's
``pool_candidates`` default."""


def live_importance(store: FitnessStore, stale_correction: bool = True, power: float = 1.0) -> Importance:
    """Each pixel's importance from its cached error as of now: Soft Mining's L1 importance (the root
    of the squared error) to the ``power`` (0: uniform), stale errors rescaled like the ranking's,
    never-measured pixels at the mean of the measured ones in the same draw (no measurement says
    they differ; zero would starve them).

    Every trained ray refreshes its pixel's error, so a draw by this importance follows the errors of
    the last steps, not only those of the last key iteration: what makes Soft Mining's draw, rebuilt
    every 10 steps, fast (benchmarks/README.md, "Findings in full"). The stale-ratio table changes
    only at key iterations and is built once per call of this function.
    """
    ratios = store.stale_ratios() if stale_correction else None

    def importance(flat: Tensor) -> Tensor:
        flat = flat.to(store.fitness.device).long()
        epoch = store.epoch[flat].long()
        error = store.fitness[flat].float().nan_to_num_(nan=0.0).clamp_min_(0)
        if ratios is not None:
            error.mul_(ratios[epoch])
        weight = error.pow_(0.5 * power)
        measured = epoch > 0
        if bool(measured.any()):
            weight[~measured] = weight[measured].mean()
        else:
            weight.fill_(1.0)
        return weight

    return importance


SPARSE_SHARE = 1 / 8
"""Pools with fewer than this share of the pixels also keep their member list (4 bytes a member):
drawing members by rejection from the bits would take more than 8 tries each."""
STALEST_SAMPLE = 64
"""``stalest`` looks at a uniform sample of this many members per re-measured ray."""


class CandidatePool:
    """The pool of one key iteration and what mutation may draw from (everything valid outside it).

    Membership is one bit per pixel (``bits``, 1/8 byte a pixel): members are drawn uniformly by
    rejection from the bits, O(batch / share) per step, and a pool restored from its bits is
    identical. Sparse pools (under ``SPARSE_SHARE``) also keep their members in ascending order.

    Draws are made where the selector's generator is, the host, so that a GPU run draws what a CPU
    run draws. On a GPU store the pool therefore keeps a host copy of its bits (and members), made
    once per key iteration, and a step's draw never goes to the device and back: its rays reach the
    device once, with the write-back (``FitnessStore.update``).
    """

    def __init__(self, store: FitnessStore, pool: Tensor) -> None:
        """``pool``: a [P] bool mask, or member flat indices (distinct, any order)."""
        self.store = store
        device = store.fitness.device
        pool = pool.to(device)
        if pool.dtype == torch.bool:
            if pool.numel() != store.num_pixels:
                raise ValueError(f"pool mask has {pool.numel()} entries for {store.num_pixels} pixels")
            self.bits = pack_bits(pool)
            self.size = int(torch.count_nonzero(pool))
            members = pool.nonzero().squeeze(1) if self.size < SPARSE_SHARE * store.num_pixels else None
        else:
            members = torch.sort(pool.long()).values
            self.bits = bits_of_indices(members, store.num_pixels)
            self.size = int(members.numel())
        """Packed membership (``evos_nerf.core.bits``)."""
        sparse = members is not None and self.size < SPARSE_SHARE * store.num_pixels
        dtype = torch.int32 if store.num_pixels < 2**31 else torch.long
        self.sparse_members: Optional[Tensor] = members.to(dtype) if sparse else None
        """Members in ascending order, for sparse pools only."""
        self.num_excluded = self.size + (store.num_pixels - store.num_valid)
        self._host_bits = self.bits.cpu()
        self._host_members = None if self.sparse_members is None else self.sparse_members.cpu()
        """Host copies for host draws (the same tensors on a CPU store)."""

    def _bits_for(self, flat: Tensor) -> Tensor:
        return self._host_bits if flat.device.type == "cpu" else self.bits

    @property
    def num_unselected(self) -> int:
        """Valid pixels outside the pool: what mutation draws from."""
        return self.store.num_pixels - self.num_excluded

    def _outside(self, flat: Tensor) -> Tensor:
        return ~bits_at(self._bits_for(flat), flat)

    def excluded_at(self, flat: Tensor) -> Tensor:
        """Whether mutation may not draw each pixel (a pool member or masked out): O(R), on ``flat``'s device."""
        flat = flat.long()
        return bits_at(self._bits_for(flat), flat) | self.store.invalid_at(flat)

    def sample(self, count: int, generator: torch.Generator) -> Tensor:
        """``count`` distinct members, uniformly (all of them when there are fewer). O(count / share)."""
        device = generator.device
        if self._host_members is not None:
            members = self._host_members if device.type == "cpu" else self.sparse_members
            return members.index_select(0, mutate(self.size, count, None, generator, device)).long()
        return mutate(self.store.num_pixels, count, self._outside, generator, device, self.store.num_pixels - self.size)

    def sample_by(self, count: int, importance: Importance, candidates: int, generator: torch.Generator) -> Tensor:
        """``count`` members drawn with replacement in proportion to ``importance``. O(count * candidates).

        Sampling-importance-resampling: ``candidates * count`` distinct members drawn uniformly, then
        ``count`` of them with probability proportional to their importance. Exact when the pool is no
        larger than the candidates; otherwise the draw tends to the proportional one over the whole
        pool as ``candidates`` grows, while its cost stays a fixed multiple of the batch (a full
        distribution over the pool would cost O(pool) per step). All-zero importance draws uniformly.
        """
        if count <= 0:
            return torch.empty(0, dtype=torch.long, device=generator.device)
        pool = self.sample(max(1, int(candidates)) * count, generator)
        weights = importance(pool).double().clamp_min(0).to(generator.device)
        total = float(weights.sum())
        if not (total > 0 and math.isfinite(total)):
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights, count, replacement=True, generator=generator)
        return pool[pick.to(pool.device)]

    def draw(
        self,
        batch_size: int,
        num_mutants: int,
        generator: torch.Generator,
        importance: Optional[Importance] = None,
        candidates: int = POOL_CANDIDATES,
    ) -> Tuple[Tensor, int]:
        """(flat indices of one batch: pool members first, then mutants; number of mutants). O(batch).

        Members are drawn uniformly and distinct, or with ``importance`` by ``sample_by``; mutants
        are always uniform over the valid pixels outside the pool."""
        num_mutants = min(max(int(num_mutants), 0), batch_size)
        num_selected = min(batch_size - num_mutants, self.size)
        num_mutants = batch_size - num_selected
        device = generator.device
        if importance is None:
            selected = self.sample(num_selected, generator)
        else:
            selected = self.sample_by(num_selected, importance, candidates, generator)
        mutants = mutate(self.store.num_pixels, num_mutants, self.excluded_at, generator, device, self.num_excluded)
        return fill(torch.cat([selected, mutants]), batch_size, generator), int(mutants.numel())

    def stalest(self, budget: int, generator: torch.Generator) -> Tensor:
        """Up to ``budget`` members measured in the oldest epochs (re-measured before ranking), ties at random.

        The stalest of a uniform sample of ``STALEST_SAMPLE * budget`` members (all members when the
        pool is smaller): epochs tie by the thousands, so this matches the stalest of the whole pool
        up to ties in practice, at O(budget) instead of a pass over the pool.
        """
        if budget <= 0 or self.size == 0:
            return torch.empty(0, dtype=torch.long, device=self.store.fitness.device)
        candidates = self.sample(STALEST_SAMPLE * budget, generator).to(self.store.fitness.device)
        age = self.store.current_epoch - self.store.epoch[candidates].int()
        return torch.sort(candidates[top_k_mask(age, budget, generator=generator)]).values

    def contains(self, flat: Tensor) -> Tensor:
        """Whether each flat index is a pool member (on ``flat``'s device)."""
        return bits_at(self._bits_for(flat), flat)

    def members(self) -> Tensor:
        """All members in ascending order (O(P) unless sparse: inspection and tests)."""
        if self.sparse_members is not None:
            return self.sparse_members.long()
        return unpack_bits(self.bits, self.store.num_pixels).nonzero().squeeze(1)

    def image_bits(self, local: int) -> Tensor:
        """Packed membership of one local image's pixels (a checkpoint entry). O(pixels of the image)."""
        start, end = self.store.image_range(local)
        first, last = start // 8, (end + 7) // 8
        return pack_bits(unpack_bits(self.bits[first:last], 8 * (last - first))[start - 8 * first : end - 8 * first])

    @classmethod
    def from_image_bits(cls, store: FitnessStore, bits: List[Tensor]) -> "CandidatePool":
        """The pool whose membership of local image i is ``bits[i]`` (the inverse of ``image_bits``)."""
        mask = torch.empty(store.num_pixels, dtype=torch.bool, device=store.fitness.device)
        for local, packed in enumerate(bits):
            start, end = store.image_range(local)
            if packed.numel() != num_bytes(end - start):
                raise ValueError(f"pool bits of image {local} have {packed.numel()} bytes, expected {num_bytes(end - start)}")
            mask[start:end] = unpack_bits(packed.to(mask.device), end - start)
        return cls(store, mask)

    def memory_bytes(self) -> int:
        listed = 0 if self.sparse_members is None else self.sparse_members.numel() * self.sparse_members.element_size()
        return self.bits.numel() + listed
