"""How much harder the pool is *now* than the pixels outside it, measured on the rays just trained.

EVOS ranks its pool on cached errors that are up to a key interval stale, and a single cached
error is a noisy sample of a pixel's error: how much the selection is still worth is not in the
cache. The rays it trains say it for free. Within one key interval the pool's members are drawn
uniformly from the pool and the mutants uniformly from the pixels outside it, so the mean training
error of each group is an unbiased estimate of that group's current mean error. Their ratio
``hardness = E_pool / E_rest`` is the read-out: 1 means the ranking no longer finds harder pixels
than chance, and the bias of selecting costs without buying anything.

:func:`loss_share_mutants` turns it into a batch split that puts each group's share of the batch
in proportion to its share of the current training loss (``mutation_control live``): a pool of a
share f of all pixels that is h times harder than the rest carries f h / (f h + 1 - f) of the loss.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]


class LiveHardness:
    """Per key interval sums of the trained rays' errors, inside and outside the pool (this rank's)."""

    def __init__(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64)
        """[pool error sum, pool rays, rest error sum, rest rays] of the open interval."""
        self.hardness = math.nan
        """E_pool / E_rest of the last closed interval over all ranks (NaN: not measured yet)."""

    def add(self, in_pool: Tensor, errors: Tensor) -> None:
        """One step's trained rays: ``in_pool`` [R] bool, ``errors`` [R] (non-finite ones are left out)."""
        if self.sums.device != errors.device:  # kept beside the errors: no host read per step on a GPU
            self.sums = self.sums.to(errors.device)
        errors = errors.detach().double()
        # Host membership (host draws) with GPU errors, or back. Non-blocking only toward the GPU: a
        # non-blocking copy to the host could be read below before it lands.
        in_pool = in_pool.to(errors.device, non_blocking=errors.device.type != "cpu")
        finite = torch.isfinite(errors)
        inside, outside = finite & in_pool, finite & ~in_pool
        zero = errors.new_zeros(())
        self.sums += torch.stack([
            torch.where(inside, errors, zero).sum(), inside.sum(), torch.where(outside, errors, zero).sum(), outside.sum()
        ]).double()

    def take(self, reduce: Reduce) -> float:
        """Close the interval: agree the sums over ranks (a collective) and update ``hardness``.

        An interval with no ray on either side, or no error outside the pool, keeps the last value."""
        pool_sum, pool_n, rest_sum, rest_n = reduce(self.sums.clone()).tolist()
        self.sums.zero_()
        if pool_n > 0 and rest_n > 0 and rest_sum > 0:
            self.hardness = (pool_sum / pool_n) / (rest_sum / rest_n)
        return self.hardness

    def state_tensor(self) -> Tensor:
        """The open sums and the last hardness, for an exact resume."""
        return torch.cat([self.sums.cpu(), torch.tensor([self.hardness], dtype=torch.float64)])

    def load_state_tensor(self, state: Tensor) -> None:
        values = state.to(torch.float64).cpu()
        self.sums = values[:4].clone().to(self.sums.device)
        self.hardness = float(values[4])


def loss_share_mutants(pool_fraction: float, hardness: float) -> float:
    """Share of a batch drawn outside the pool when each side gets its share of the current loss.

    ``pool_fraction`` f of all pixels are in the pool, each ``hardness`` h times the rest's error on
    average: the rest carries (1 - f) / (f h + 1 - f) of the loss. h = 1 gives f's complement, a
    uniform draw; a larger h leaves fewer rays to the rest, and h below 1 (a ranking that now finds
    easier pixels than chance) more. Returns NaN when either input is unusable.
    """
    f, h = float(pool_fraction), float(hardness)
    if not (0.0 <= f <= 1.0) or not math.isfinite(h) or h < 0:
        return math.nan
    rest = 1.0 - f
    total = f * h + rest
    return rest / total if total > 0 else math.nan
