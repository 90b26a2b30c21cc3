"""Fitness estimates for never-visited pixels from their measured neighbours.

A NeRF run trains only a small share of all training pixels (600 steps x 1024 rays visit under a
fifth of a 80-view 200 px scene), so most of the store is never measured. If never-visited pixels
rank with one global prior, the candidate pool fills with random unvisited pixels and EVOS
degenerates to uniform sampling (measured on lego_200). Errors are spatially correlated, though:
an unvisited pixel next to high-error pixels (object edges, fine texture) is likely to have a
high error, one in a learned white background a low one.

The estimate is the posterior mean of a block's error: the block's measured errors plus one
pseudo-observation at the image's mean, which itself is shrunk toward the
global mean in the same way. Sparse blocks fall back smoothly to their image, unvisited images to
the global mean. Cost: a few passes over each image (in cache) per key iteration.

With several block sizes (fine to coarse, each a multiple of the one before) the estimate is a
hierarchy of the same shrinkage: a fine block is shrunk toward its coarser block's estimate, that
one toward the next, the coarsest toward the image. How well a block size works depends on how
many measurements a block holds, which changes with rays per step, image size and the step: at
2048 rays on half-size real captures 8 px blocks beat 16 px ones, and full-size images or fewer
rays hold a quarter as many measurements per block. In the hierarchy a sparse fine block falls
back to its neighbourhood rather than to the whole image. Measured, that did not make a fine size
sooner than 16 px at every density (benchmarks/README.md, "Findings in full"), so it is an ablation.

One pseudo-observation per level is a fixed guess at how far a block's few measurements should be
trusted. The fitted strength (``BlockPrior(pseudo_count="fitted")``) measures it instead, per image
and level, as parametric empirical Bayes does (Morris 1983): the posterior mean of a block's error
with n measurements weights them by n / (n + k), k = sigma^2 / tau^2, where sigma^2 is the spread of
single errors inside a block and tau^2 the spread of block means inside their parent, both estimated
from the measurements by the random-effects ANOVA moments. Noisy errors or blocks no different from
their parent give a large k (fall back to the parent); blocks that differ much give a small one
(trust the block). The right strength then follows the density and the image on its own.

The posterior mean is the best guess at a block's error, but the ranking keeps the top of the
estimates, and shrinkage pulls a sparse block whose few measurements are high toward its parent,
so the pool may never train it again to find out. An upper-confidence bonus
(``BlockPrior(bonus=c)``) ranks never-visited pixels by the posterior mean plus c posterior standard
deviations of their block's mean, sqrt(sigma^2 / (n + k)) (the normal-normal posterior with k =
sigma^2 / tau^2), as UCB does in a bandit: sparse blocks are ranked optimistically, and the bonus
shrinks as their measurements accumulate. sigma^2 is each image's pooled spread of errors inside
the finest blocks; the parents' own uncertainty is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor


def block_sums(values: Tensor, height: int, width: int, block: int) -> Tensor:
    """[H*W] -> [ceil(H/b), ceil(W/b)] sums over b x b blocks (zero-padded at the borders)."""
    hb, wb = -(-height // block), -(-width // block)
    padded = torch.zeros(hb * block, wb * block, dtype=values.dtype, device=values.device)
    padded[:height, :width] = values.reshape(height, width)
    return padded.view(hb, block, wb, block).sum(dim=(1, 3))


def expand_blocks(blocks: Tensor, height: int, width: int, block: int) -> Tensor:
    """[ceil(H/b), ceil(W/b)] -> [H*W]: every pixel takes its block's value."""
    hb, wb = blocks.shape
    full = blocks[:, None, :, None].expand(hb, block, wb, block).reshape(hb * block, wb * block)
    return full[:height, :width].reshape(-1)


PseudoCount = Union[float, Literal["fitted"]]
"""Pseudo-observations that shrink a block toward its parent: a number, or fitted per image and level."""

FITTED_RANGE = (1e-3, 1e6)
"""Bounds of a fitted pseudo-count: the low one keeps an empty block's 0 / 0 at its parent, the high
one stands for "no block differs from its parent" (a zero or negative spread of block means)."""


@dataclass(frozen=True)
class BlockPrior:
    """The neighbourhood prior's block sizes (fine to coarse) and its strength, as one ranking setting."""

    sizes: Tuple[int, ...] = (16,)
    pseudo_count: PseudoCount = 1.0
    bonus: float = 0.0
    """c: never-visited pixels rank at their block's posterior mean plus c posterior standard deviations."""


Blocks = Union[int, Sequence[int], BlockPrior]
"""One block size, or several from fine to coarse (each a multiple of the one before): a hierarchy;
or a ``BlockPrior``, which also names the pseudo-count."""


def block_sizes(block: Blocks) -> Tuple[int, ...]:
    """``block`` as a checked fine-to-coarse tuple."""
    if isinstance(block, BlockPrior):
        block = block.sizes
    sizes = (block,) if isinstance(block, int) else tuple(int(b) for b in block)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"neighbourhood block sizes must be >= 1, got {block}")
    for fine, coarse in zip(sizes, sizes[1:]):
        if coarse <= fine or coarse % fine:
            raise ValueError(f"neighbourhood block sizes must grow by whole multiples, got {sizes}")
    return sizes


def block_estimate(
    values: Tensor, seen: Tensor, height: int, width: int, global_mean: float, block: Blocks,
    evidence: Optional[Tuple[Tensor, Tensor]] = None, pooled: bool = False,
) -> Tensor:
    """[ceil(H/b), ceil(W/b)] posterior mean error of each finest block (size b) of one image.

    ``values`` [H*W] are the errors with unmeasured pixels at 0, ``seen`` [H*W] float 1 where measured.
    Each level's blocks are shrunk toward the next coarser level's estimate, the coarsest toward the
    image's mean (see the module docstring). Coarse sums are pooled from fine ones: one pass per image.
    A ``BlockPrior``'s pseudo-count sets the shrinkage (one pseudo-observation for plain sizes); with
    a fitted one, the image's mean is shrunk toward ``global_mean`` with one (an image holds thousands).
    Its ``bonus`` c adds c posterior standard deviations to each finest block (``upper_bonus``).
    ``evidence`` (sums, counts) per finest block, of readings from other sources (the other views'
    errors, ``evos_nerf.core.crossview``), is one more level between the finest blocks and their
    parent: shrunk toward the parent with one pseudo-observation, and the blocks toward it. With
    ``pooled`` they are measurements of the block instead, at every level, beside its own (which may
    be stale: the readings are recent); the pooled readings do not enter the fitted strength or the bonus.
    """
    sizes = block_sizes(block)
    pseudo_count = block.pseudo_count if isinstance(block, BlockPrior) else 1.0
    bonus = block.bonus if isinstance(block, BlockPrior) else 0.0
    fitted = pseudo_count == "fitted"
    k = 1.0 if fitted else float(pseudo_count)  # the image's; also every level's unless fitted
    count, total = float(seen.sum()), float(values.sum())
    parent: Union[Tensor, float] = (total + k * global_mean) / (count + k)
    first = [block_sums(values, height, width, sizes[0]), block_sums(seen, height, width, sizes[0])]
    if pooled and evidence is not None:
        if fitted or bonus > 0:
            raise ValueError("pooled evidence does not combine with a fitted strength or a bonus")
        first = [first[0] + evidence[0].to(first[0]), first[1] + evidence[1].to(first[1])]
    if fitted or bonus > 0:
        first.append(block_sums(values * values, height, width, sizes[0]))
    sums = [tuple(first)]
    factors = [coarse // fine for fine, coarse in zip(sizes, sizes[1:])]
    for factor in factors:
        hb, wb = sums[-1][0].shape
        sums.append(tuple(block_sums(level_sum, hb, wb, factor) for level_sum in sums[-1]))
    for level in reversed(range(len(sizes))):
        block_total, block_count = sums[level][:2]
        hb, wb = block_total.shape
        coarsest = level == len(factors)
        if fitted:  # the coarsest level's parent is the whole image: one block covering the grid
            parent_sums = (block_total.sum().view(1, 1), block_count.sum().view(1, 1)) if coarsest else sums[level + 1][:2]
            k = fitted_pseudo_count(*sums[level], *parent_sums, max(hb, wb) if coarsest else factors[level])
        if not coarsest:  # the coarser estimate, spread over this level's blocks
            parent = expand_blocks(parent, hb, wb, factors[level]).view(hb, wb)
        if level == 0 and evidence is not None and not pooled:
            parent = (evidence[0].to(block_total) + parent) / (evidence[1].to(block_count) + 1.0)
        parent = (block_total + k * parent) / (block_count + k)
    if bonus > 0:
        parent = parent + upper_bonus(*sums[0], k, bonus)
    return parent


def upper_bonus(total: Tensor, count: Tensor, squares: Tensor, pseudo_count: float, bonus: float) -> Tensor:
    """c sqrt(sigma^2 / (n + k)) per block: c posterior standard deviations of each block's mean error.

    With too few measurements to measure sigma^2 there is no spread to go on, and the bonus is 0.
    """
    within = pooled_within_variance(total, count, squares)
    if within is None:
        return torch.zeros_like(total, dtype=torch.float32)
    return (bonus * (within / (count.double() + pseudo_count)).sqrt()).float()


def pooled_within_variance(total: Tensor, count: Tensor, squares: Tensor) -> Optional[float]:
    """sigma^2: the pooled variance of measurements around their block's mean, from each block's sums
    of errors, counts and squared errors; None below two degrees of freedom (n - blocks)."""
    total, count, squares = total.double(), count.double(), squares.double()
    used = count > 0
    n, blocks = float(count.sum()), float(used.sum())
    if n - blocks < 2:
        return None
    return max((float(squares.sum()) - float((total[used] ** 2 / count[used]).sum())) / (n - blocks), 0.0)


def fitted_pseudo_count(
    total: Tensor, count: Tensor, squares: Tensor, parent_total: Tensor, parent_count: Tensor, factor: int
) -> float:
    """k = sigma^2 / tau^2 for one level of blocks, from their sums of errors, counts and squares.

    The random-effects moments of an unbalanced one-way (nested) ANOVA: sigma^2 is the pooled variance
    of measurements around their block's mean; the spread of block means around their parent's mean
    (``parent_*``: the parents' sums, one parent per ``factor`` x ``factor`` blocks) exceeds what
    sigma^2 alone explains by tau^2 times sum_p (N_p - sum_b n_b^2 / N_p).
    Returns 1 (the fixed prior) where too few measurements fit it, the top of ``FITTED_RANGE`` when
    blocks differ no more than their noise, its bottom when measurements agree exactly inside blocks.
    """
    within = pooled_within_variance(total, count, squares)
    total, count = total.double(), count.double()
    parent_total, parent_count = parent_total.double(), parent_count.double()
    hb, wb = count.shape
    parent_of_block = expand_blocks(parent_count, hb, wb, factor).view(hb, wb)
    used, parent_used = count > 0, parent_count > 0
    n, blocks, parents = float(count.sum()), float(used.sum()), float(parent_used.sum())
    block_terms = float((total[used] ** 2 / count[used]).sum())
    parent_terms = float((parent_total[parent_used] ** 2 / parent_count[parent_used]).sum())
    spread_scale = n - float((count[used] ** 2 / parent_of_block[used]).sum())
    if within is None or blocks - parents < 1 or spread_scale <= 0:
        return 1.0
    between = (block_terms - parent_terms - (blocks - parents) * within) / spread_scale
    if between <= 0:
        return FITTED_RANGE[1]
    return min(max(within / between, FITTED_RANGE[0]), FITTED_RANGE[1])


def fill_unmeasured(
    fitness: Tensor, measured: Tensor, height: int, width: int, global_mean: float, block: Blocks = 16,
    shrinkage: float = 0.0, evidence: Optional[Tuple[Tensor, Tensor]] = None, pooled: bool = False,
) -> None:
    """In place: every unmeasured pixel of one image [H*W] takes its block's estimate (O(H*W), few passes).
    ``evidence``: other readings per finest block, a level of the estimate or, ``pooled``, more
    measurements of it (``block_estimate``).

    ``measured`` is float 1 / 0. Unmeasured entries of ``fitness`` must hold 0, as the store's
    never-measured pixels do: the fill is then an add, which is much faster than a masked select.

    ``shrinkage`` k > 0 also moves every measured pixel to its posterior mean, its one measurement
    e and k pseudo-observations at the block's estimate B: (e + k B) / (1 + k). A visited pixel's
    fitness is a single stale sample (at 1200 steps x 512 rays a real capture's training pixel is
    measured well under once on average), and the block pools the evidence of its neighbours.
    """
    estimate = expand_blocks(block_estimate(fitness, measured, height, width, global_mean, block, evidence, pooled),
                             height, width, block_sizes(block)[0])
    if shrinkage > 0:
        shrink_toward(fitness, estimate, measured, shrinkage)
    else:
        fitness.addcmul_(estimate, 1.0 - measured)


def shrink_toward(fitness: Tensor, estimate: Union[Tensor, float], measured: Tensor, shrinkage: float) -> None:
    """In place: measured entries to (e + k B) / (1 + k), unmeasured ones (holding 0) to B.

    e -> B + w (e - B) with w = 1 / (1 + k) where measured and 0 where not. ``estimate`` B is a
    per-pixel tensor (the neighbourhood prior) or one number (the global mean prior).
    """
    fitness.sub_(estimate).mul_(measured * (1.0 / (1.0 + shrinkage))).add_(estimate)


def neighbourhood_estimate(
    fitness: Tensor,
    measured: Tensor,
    offsets: Tensor,
    heights: Tensor,
    widths: Tensor,
    global_mean: float,
    block: Blocks = 16,
) -> Tensor:
    """Estimated fitness of every pixel from the measured pixels of its b x b block and image.

    ``fitness`` [P] float and ``measured`` [P] bool are flat over images laid end to end
    (``offsets`` [N + 1]). Only entries where ``measured`` is true are read.
    """
    out = torch.empty_like(fitness)
    for i in range(heights.numel()):
        start, end = int(offsets[i]), int(offsets[i + 1])
        h, w = int(heights[i]), int(widths[i])
        seen = measured[start:end].to(fitness.dtype)
        values = torch.nan_to_num(fitness[start:end]) * seen
        estimate = block_estimate(values, seen, h, w, global_mean, block)
        out[start:end] = expand_blocks(estimate, h, w, block_sizes(block)[0])
    return out
