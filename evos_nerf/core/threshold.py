"""The exact top-k of a very large array from a sampled threshold: key iterations at capture scale.

``torch.topk`` with k a quarter of 10^8 values keeps k values in a heap: about 40 s on one CPU
thread. A key iteration only needs the *set* (the pool is drawn from uniformly), so:

1. the k-th largest value is bracketed by order statistics of a random sample of the values: the
   sample's rank of it is binomial, so ranks ``k/n * S -/+ 4 standard deviations`` give a bracket
   [lo, hi] that holds it with probability above 1 - 1e-4;
2. one pass in cache-sized chunks marks every value above ``hi`` and collects the few in [lo, hi];
3. the exact k-th largest value t is found among those candidates, the candidates above t are
   marked, and exactly as many ties at t as still needed (uniformly at random with a generator,
   else the lowest indices). If the bracket missed, it is widened and the pass repeated.

The marked set is exactly a top-k set: the same as ``torch.topk``'s up to the choice among ties.
NaN values are never selected. The sample positions come from a fixed seed, so the result is
deterministic given the values and the generator.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor

SAMPLE_SIZE = 1 << 18
"""Values sampled to bracket the threshold: ~1/400 of the values are candidates at 10^8, k = N/4."""
CHUNK = 1 << 20
"""Values per pass chunk: a few MiB, so each chunk's comparisons run in cache."""
SMALL = 1 << 18
"""Below this size the k-th value comes straight from torch.topk."""


def _as_float(values: Tensor) -> Tensor:
    # Half-precision comparisons are slow on CPUs and topk has no fp16 kernel there.
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def _restricted(values: Tensor, within: Optional[Tensor]) -> Tensor:
    """Values with everything outside ``within`` at -inf (a copy; the input is untouched)."""
    values = _as_float(values)
    if within is None:
        return values
    return torch.where(within, values, torch.full_like(values, float("-inf")))


def top_k_mask(
    values: Tensor, k: int, within: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
    out: Optional[Tensor] = None,
) -> Tensor:
    """Boolean mask with exactly ``min(k, eligible)`` True entries at the largest values.

    ``within`` (bool, same length) restricts the choice to its True entries. Entries tied with the
    k-th largest value are chosen uniformly at random with ``generator``, else by lowest index.
    ``out`` (bool, same length; may be ``within`` itself) receives the mask instead of a new tensor:
    at capture scale every fresh 100 MB mask costs page faults.
    """
    v = values.reshape(-1)
    n = v.numel()
    if within is not None:
        within = within.reshape(-1)
        if within.numel() != n:
            raise ValueError(f"within has {within.numel()} entries, values {n}")
    k = max(0, min(int(k), n if within is None else int(torch.count_nonzero(within))))
    mask = out.reshape(-1) if out is not None else torch.empty(n, dtype=torch.bool, device=v.device)
    if k == 0 or n <= SMALL:
        eligible = ~torch.isnan(_as_float(v))
        if within is not None:
            eligible &= within
        above, candidates = 0, eligible.nonzero().squeeze(1)
        mask.zero_()
        if k == 0:
            return mask
    else:
        for spread in (4.0, 16.0, math.inf):
            lo, hi = _bracket(v, k, within, spread)
            above, candidates = _scan(v, within, lo, hi, mask)
            if 0 <= k - above <= candidates.numel():
                break
    need = min(k - above, candidates.numel())  # short only when there are fewer non-NaN values than k
    if need > 0:
        cand_values = _as_float(v[candidates])
        t = torch.topk(cand_values, need, sorted=True).values[-1]
        _mark(mask, candidates, cand_values, t, need, generator)
    return mask


def _bracket(v: Tensor, k: int, within: Optional[Tensor], spread: float):
    """(lo, hi): sample order statistics around the k-th largest value's expected sample rank."""
    n = v.numel()
    if math.isinf(spread):
        return float("-inf"), float("inf")
    local = torch.Generator().manual_seed(0x5E1EC7 + n)
    pos = torch.randint(0, n, (SAMPLE_SIZE,), generator=local).to(v.device)
    sample = _restricted(v[pos], None if within is None else within[pos])
    sample = torch.sort(sample, descending=True).values.cpu()
    q = k / n
    centre = q * SAMPLE_SIZE
    margin = spread * math.sqrt(SAMPLE_SIZE * q * (1.0 - q)) + 16
    hi_rank, lo_rank = math.floor(centre - margin), math.ceil(centre + margin)
    hi = float("inf") if hi_rank < 0 else float(sample[hi_rank])
    lo = float("-inf") if lo_rank >= SAMPLE_SIZE else float(sample[lo_rank])
    return lo, hi


def _scan(v: Tensor, within: Optional[Tensor], lo: float, hi: float, mask: Tensor):
    """One pass: mask[i] = v[i] > hi (within only); returns (how many, indices with lo <= v[i] <= hi)."""
    above = 0
    found: List[Tensor] = []
    for start in range(0, v.numel(), CHUNK):
        end = min(start + CHUNK, v.numel())
        chunk = _as_float(v[start:end])
        keep = None if within is None else within[start:end]
        if keep is not None and mask.data_ptr() == within.data_ptr():
            keep = keep.clone()  # ``mask`` is ``within``: read this chunk before overwriting it
        out = mask[start:end]
        torch.gt(chunk, hi, out=out)
        band = torch.ge(chunk, lo)
        band ^= out  # lo <= v <= hi, as out (v > hi) lies inside band (v >= lo)
        if keep is not None:
            out &= keep
            band &= keep
        above += int(out.view(torch.uint8).sum(dtype=torch.int64))  # twice as fast as count_nonzero
        found.append(band.nonzero().squeeze(1) + start)
    return above, torch.cat(found)


def _mark(mask: Tensor, candidates: Tensor, cand_values: Tensor, t: Tensor, need: int,
          generator: Optional[torch.Generator]) -> None:
    """Mark the candidates above t and ``need`` minus that many of those equal to t."""
    above = candidates[cand_values > t]
    mask[above] = True
    ties = candidates[cand_values == t]
    take = need - above.numel()
    if take <= 0:
        return
    if generator is not None and take < ties.numel():
        pick = torch.randperm(ties.numel(), generator=generator, device=generator.device)[:take]
        ties = ties[pick.to(ties.device)]
    mask[ties[:take]] = True
