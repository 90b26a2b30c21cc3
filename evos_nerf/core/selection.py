"""Selection operators of EVOS: frequency-guided crossover and augmented unbiased mutation.

Pure functions on flat tensors: fitness in, indices out. They never loop over samples in Python,
use top-k rather than full sorts (a sampled threshold for very large inputs, see
``evos_nerf.core.threshold``), and take an explicit ``torch.Generator`` for every random draw, so
the image trainer, the nerfstudio sampler and the sharded store share one implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Union

import torch
from torch import Tensor

from evos_nerf.core.threshold import top_k_mask

CrossoverMethod = Literal["select", "add", "none"]

# Mutation draws by rejection (O(n)) when the pool is at least this many times larger than the draw.
_REJECTION_POOL_FACTOR = 8
# top_k of at least this many values uses the sampled threshold instead of torch.topk.
LARGE_TOP_K = 1 << 22

Excluded = Union[Tensor, Callable[[Tensor], Tensor]]
"""What mutation may not draw: a boolean mask, or a function telling it for given indices (O(draw))."""


@dataclass
class Offspring:
    """Result of a crossover: the surviving indices, fittest first, and how they were merged."""

    indices: Tensor
    """Long tensor of k distinct sample indices, ordered from most to least fit."""
    balance: float
    """Adaptive balance p = mean(e) / (mean(e) + mean(l)) (EVOS Eq. 5)."""
    num_shared: int
    """Size of the intersection of the two parents (kept whole)."""


def top_k(values: Tensor, k: int, ordered: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices of the k largest values: largest first, or (``ordered=False``) in ascending index order.

    Inputs of at least ``LARGE_TOP_K`` values take a sampled threshold and one pass instead of
    torch.topk's heap (same set up to ties; ties broken at random with ``generator``).
    """
    n = values.numel()
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.empty(0, dtype=torch.long, device=values.device)
    flat = values.reshape(-1)
    if flat.dtype in (torch.float16, torch.bfloat16) and flat.device.type == "cpu":
        flat = flat.float()
    if n < LARGE_TOP_K:
        indices = torch.topk(flat, k, largest=True, sorted=True).indices
        return indices if ordered else torch.sort(indices).values
    indices = top_k_mask(flat, k, generator=generator).nonzero().squeeze(1)
    if ordered:
        indices = indices[torch.sort(flat[indices], descending=True, stable=True).indices]
    return indices


def adaptive_balance(fitness: Tensor, hf_fitness: Tensor) -> float:
    """EVOS Eq. 5: p = mean(e) / (mean(l) + mean(e)), the share of non-shared picks from the L2 parent.

    Computed in the fitness maps' own floating dtype, as the official code does (float32 for a
    float32 model), because ``int(R * p)`` is rounded at that precision. 0.5 when undefined.
    """
    return float(_balance(fitness.reshape(-1), hf_fitness.reshape(-1)))


def _balance(e: Tensor, l: Tensor) -> Tensor:
    e = e if e.is_floating_point() else e.float()
    l = l if l.is_floating_point() else l.float()
    e_mean = e.mean()
    p = e_mean / (l.mean() + e_mean)
    if not bool(torch.isfinite(p)) or float(p) < 0.0 or float(p) > 1.0:
        return torch.tensor(0.5, dtype=p.dtype)
    return p


def membership(indices: Tensor, num_samples: int) -> Tensor:
    """Boolean mask of length num_samples that is True at ``indices``."""
    mask = torch.zeros(num_samples, dtype=torch.bool, device=indices.device)
    mask[indices] = True
    return mask


def crossover(
    fitness: Tensor,
    hf_fitness: Optional[Tensor],
    k: int,
    method: CrossoverMethod = "select",
    balance: Optional[float] = None,
    zero_pick_guard: bool = True,
    ordered: bool = True,
    generator: Optional[torch.Generator] = None,
) -> Offspring:
    """Frequency-guided crossover (EVOS §2.4): merge the top-k by L2 error with the top-k by high-frequency error.

    ``select`` keeps the parents' intersection whole and fills the remainder R from the two
    parents: int(R * p) from the L2 side, the rest from the Laplacian side, each side taking its
    own best. ``add`` ranks by e + l; ``none`` ranks by e alone. ``balance`` overrides the adaptive p.

    ``zero_pick_guard`` (default on for this operator) makes a zero count mean zero picks. The
    official code slices ``x[-n:]``, and ``x[-0:]`` is the whole tensor: with the guard off, a
    side with zero picks contributes all of its non-shared parent (so the offspring exceed k),
    and k = 0 parents are all samples, exactly as the official code does. The image path turns
    the guard off by default (``EvolutionConfig.zero_pick_guard``).

    ``ordered=False`` returns the same set (up to ties) in ascending index order, found by sampled
    thresholds in a few passes instead of sorting (the ray pool of a key iteration, whose order
    does not matter); it needs the guard on. Ties are broken at random with ``generator``.
    """
    if not ordered:
        if not zero_pick_guard:
            raise ValueError("unordered crossover needs zero_pick_guard (x[-0:] semantics depend on order)")
        return _unordered_crossover(fitness, hf_fitness, k, method, balance, generator)
    num_samples = fitness.numel()
    k = max(0, min(int(k), num_samples))
    e = fitness.reshape(-1)
    if method == "none" or hf_fitness is None:
        return Offspring(top_k(e, k), 1.0, 0)
    l = hf_fitness.reshape(-1)
    if l.numel() != num_samples:
        raise ValueError(f"fitness has {num_samples} samples but hf_fitness has {l.numel()}")
    p = _balance(e, l) if balance is None else float(balance)
    if method == "add":
        return Offspring(top_k(crossover_score(e, l, method), k), float(p), 0)
    if method != "select":
        raise ValueError(f"unknown crossover method {method!r}")

    if k == 0 and not zero_pick_guard:
        k = num_samples  # official: sorted[-0:] makes both parents every sample
    parent_e = top_k(e, k)
    parent_l = top_k(l, k)
    in_e = membership(parent_e, num_samples)
    in_l = membership(parent_l, num_samples)
    shared = parent_e[in_l[parent_e]]  # ordered by e
    only_e = parent_e[~in_l[parent_e]]  # still ordered by e
    only_l = parent_l[~in_e[parent_l]]  # still ordered by l
    remainder = k - shared.numel()
    # int(R * p) with p a 0-d tensor rounds the product at the maps' precision, as the official code.
    num_from_e = min(int(remainder * p), only_e.numel())
    num_from_l = min(remainder - num_from_e, only_l.numel())
    take_e = only_e[:num_from_e] if num_from_e > 0 or zero_pick_guard else only_e
    take_l = only_l[:num_from_l] if num_from_l > 0 or zero_pick_guard else only_l
    indices = torch.cat([shared, take_e, take_l])
    return Offspring(indices, float(p), shared.numel())


def _unordered_crossover(
    fitness: Tensor, hf_fitness: Optional[Tensor], k: int, method: CrossoverMethod,
    balance: Optional[float], generator: Optional[torch.Generator],
) -> Offspring:
    """``crossover`` as masks: each parent, and each side's share of the remainder, is a top-k mask."""
    num_samples = fitness.numel()
    k = max(0, min(int(k), num_samples))
    e = fitness.reshape(-1)
    if method == "none" or hf_fitness is None:
        return Offspring(top_k_mask(e, k, generator=generator).nonzero().squeeze(1), 1.0, 0)
    l = hf_fitness.reshape(-1)
    if l.numel() != num_samples:
        raise ValueError(f"fitness has {num_samples} samples but hf_fitness has {l.numel()}")
    p = float(_balance(e, l)) if balance is None else float(balance)
    if method == "add":
        score = crossover_score(e, l, method)
        return Offspring(top_k_mask(score, k, generator=generator).nonzero().squeeze(1), p, 0)
    if method != "select":
        raise ValueError(f"unknown crossover method {method!r}")
    mask = unordered_crossover_mask(e, l, k, p, generator)
    return Offspring(mask.chosen.nonzero().squeeze(1), p, mask.num_shared)


@dataclass
class CrossoverMask:
    chosen: Tensor
    """[N] bool: the offspring."""
    num_shared: int


def unordered_crossover_mask(e: Tensor, l: Tensor, k: int, p: float, generator: Optional[torch.Generator]) -> CrossoverMask:
    """The ``select`` crossover's offspring as a mask: three N-sized masks in all, reused in place."""
    in_e = top_k_mask(e, k, generator=generator)
    in_l = top_k_mask(l, k, generator=generator)
    shared = in_e & in_l
    num_shared = int(torch.count_nonzero(shared))
    in_e ^= shared  # now only in the e parent
    in_l ^= shared
    remainder = k - num_shared
    num_from_e = min(int(remainder * p), int(torch.count_nonzero(in_e)))
    num_from_l = min(remainder - num_from_e, int(torch.count_nonzero(in_l)))
    shared |= top_k_mask(e, num_from_e, within=in_e, generator=generator, out=in_e)
    shared |= top_k_mask(l, num_from_l, within=in_l, generator=generator, out=in_l)
    return CrossoverMask(shared, num_shared)


def crossover_score(fitness: Tensor, hf_fitness: Optional[Tensor], method: CrossoverMethod = "select") -> Tensor:
    """Score that orders the samples outside the offspring: e + l for ``add``, else e.

    The official code keeps one ranking of every sample; past the offspring it is ordered by this
    score, so survivors beyond the offspring (a ratio that grows between key iterations) follow it.
    """
    e = fitness.reshape(-1)
    if method == "add" and hf_fitness is not None:
        return e.float() + hf_fitness.reshape(-1).float()
    return e


def mutate(
    num_samples: int,
    num_mutants: int,
    excluded: Optional[Excluded],
    generator: torch.Generator,
    device: Optional[torch.device] = None,
    num_excluded: Optional[int] = None,
) -> Tensor:
    """Augmented unbiased mutation (EVOS Eq. 7): draw uniformly, without replacement, from the unselected samples.

    ``excluded`` is a boolean mask of length num_samples (True = already selected), a function
    that tells it for given indices (then ``num_excluded`` is required), or None; pass
    ``num_excluded`` when it is known to skip an O(N) count. Small draws from large pools use
    rejection sampling, which costs O(num_mutants) rather than O(N); both paths give every
    unselected sample the same chance.
    """
    if callable(excluded):
        if num_excluded is None:
            raise ValueError("mutate needs num_excluded when excluded is a function")
        device = device or torch.device("cpu")
    else:
        device = device or (excluded.device if excluded is not None else torch.device("cpu"))
        if excluded is not None and excluded.numel() != num_samples:
            raise ValueError(f"excluded mask has {excluded.numel()} entries, expected {num_samples}")
    if num_excluded is None:
        num_excluded = int(excluded.sum()) if excluded is not None else 0
    pool_size = num_samples - num_excluded
    num_mutants = max(0, min(int(num_mutants), pool_size))
    if num_mutants == 0:
        return torch.empty(0, dtype=torch.long, device=device)

    gen_device = generator.device
    if num_mutants * _REJECTION_POOL_FACTOR <= pool_size:
        return _mutate_by_rejection(num_samples, num_mutants, pool_size, excluded, generator).to(device)

    if excluded is None:
        perm = torch.randperm(num_samples, generator=generator, device=gen_device)[:num_mutants]
        return perm.to(device)
    if callable(excluded):  # a dense draw: O(N) anyway
        excluded = excluded(torch.arange(num_samples, device=device))
    pool = (~excluded).nonzero().squeeze(-1)
    perm = torch.randperm(pool.numel(), generator=generator, device=gen_device)[:num_mutants]
    return pool[perm.to(pool.device)].to(device)


def _mutate_by_rejection(
    num_samples: int, num_mutants: int, pool_size: int, excluded: Optional[Excluded], generator: torch.Generator
) -> Tensor:
    """Uniform n-subset of the pool: the distinct accepted values of i.i.d. uniform draws are a uniform subset."""
    gen_device = generator.device
    oversample = 1.25
    while True:
        num_draws = int(math.ceil(num_mutants * oversample * num_samples / pool_size)) + 16
        draws = torch.randint(0, num_samples, (num_draws,), generator=generator, device=gen_device)
        if callable(excluded):
            draws = draws.masked_select(~excluded(draws).to(gen_device))
        elif excluded is not None:
            # Move the O(n) draws to the mask, never the O(N) mask to the generator.
            on_mask = draws.to(excluded.device)
            draws = on_mask.masked_select(~excluded.index_select(0, on_mask)).to(gen_device)
        distinct = torch.unique(draws)
        if distinct.numel() >= num_mutants:
            keep = torch.randperm(distinct.numel(), generator=generator, device=gen_device)[:num_mutants]
            return distinct.index_select(0, keep)
        oversample *= 2.0
