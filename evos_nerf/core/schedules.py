"""Schedules of EVOS: how many samples to train on, when to re-evaluate fitness, and how many mutants.

Iterations are 1-based (t = 1 .. T), as in the official EVOS code, because the key-iteration
rule ``t mod I(t) == 1`` relies on t = 1 being the first step.

Every count here follows the official code (github zwx-open/EVOS-INR, ``trainer/img_sampling_trainer.py``
and ``components/nmt/scheduler.py``) to the sample: the ratios are evaluated with the same
floating-point expressions, in the same order, and truncated with ``int()`` without an epsilon,
so the counts agree bit for bit. Where a formula looks oddly written, that is why.
"""

from __future__ import annotations

import math
from typing import List, Literal

import numpy as np

from evos_nerf.errors import UserInputError

SampleRatioSchedule = Literal["constant", "step", "linear", "cosine"]
KeyIterationSchedule = Literal["lin_dec", "fixed"]
MutationSchedule = Literal["constant", "linear", "exp"]
MutationBase = Literal["initial", "current"]


def check_ratio(name: str, value: float, allow_zero: bool = False) -> float:
    """Reject ratios outside (0, 1] (or [0, 1]) with a message that names the offending value."""
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0) or math.isnan(value):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise UserInputError(f"{name} must be in {interval}, got {value}")
    return value


def sample_ratio(t: int, total: int, r0: float, schedule: SampleRatioSchedule = "constant") -> float:
    """Share r_t of all samples trained at iteration t (EVOS §2.2; schedulers taken from INT).

    ``step`` is the paper's step-wise scheduler: 10 equal stages from r0 up to 1.
    ``linear`` and ``cosine`` grow smoothly from r0 to 1 over the run. Within 0 <= t <= T each
    value is the official expression evaluated in the official order; t outside is clamped.
    """
    t = min(max(t, 0), total)
    if schedule == "constant":
        return r0
    if schedule == "step":
        # Stage width T / 10 and increment (1 - r0) / 10, each rounded once; the stage is a
        # float floor division (not floor(t / width), which can differ by one at a boundary).
        width = total / 10
        increment = (1.0 - r0) / 10
        return min(r0 + (t // width) * increment, 1.0)
    if schedule == "linear":
        return r0 + (t / total) * (1.0 - r0)
    if schedule == "cosine":
        # Written as 1 - (1 - r0) / 2 * (1 + cos(pi t / T)), as the official scheduler does.
        return 1.0 - 0.5 * (1.0 - r0) * (1 + math.cos(t / total * math.pi))
    raise ValueError(f"unknown sample-ratio schedule {schedule!r}")


def key_interval(
    t: int, total: int, schedule: KeyIterationSchedule = "lin_dec", init_interval: int = 100, end_interval: int = 50
) -> int:
    """Fitness-evaluation interval I(t) = int(tau + ((tau_end - tau) / T) * t) (EVOS Eq. 2).

    Evaluated in floating point as the official code does (for some T that is one less than the
    exact floor, e.g. T = 147, 10 -> 5 at t = 147 gives 4). Never below 1: where the official
    code would truncate to 0 (and divide by zero), there is no key iteration.
    """
    if schedule == "fixed":
        return max(1, int(init_interval))
    if schedule == "lin_dec":
        return max(1, int(init_interval + ((end_interval - init_interval) / total) * t))
    raise ValueError(f"unknown key-iteration schedule {schedule!r}")


def is_key_iteration(
    t: int,
    total: int,
    schedule: KeyIterationSchedule = "lin_dec",
    init_interval: int = 100,
    end_interval: int = 50,
    *,
    one_means_every_step: bool = False,
) -> bool:
    """EVOS sparse fitness evaluation: t is a key iteration iff t mod I(t) == 1 (so t = 1 is, when I(1) > 1).

    As in the official code, an interval of 1 never gives a key iteration (t mod 1 is 0).
    ``one_means_every_step=True`` reads an interval of 1 as "evaluate every step" instead.
    """
    interval = key_interval(t, total, schedule, init_interval, end_interval)
    if interval == 1:
        return one_means_every_step
    return t % interval == 1


def key_iterations(
    total: int,
    schedule: KeyIterationSchedule = "lin_dec",
    init_interval: int = 100,
    end_interval: int = 50,
    *,
    one_means_every_step: bool = False,
) -> List[int]:
    """All key iterations of a run of ``total`` iterations (72 for T = 5000 with the defaults)."""
    return [
        t
        for t in range(1, total + 1)
        if is_key_iteration(t, total, schedule, init_interval, end_interval, one_means_every_step=one_means_every_step)
    ]


def next_key_iteration(
    t: int,
    total: int,
    schedule: KeyIterationSchedule = "lin_dec",
    init_interval: int = 100,
    end_interval: int = 50,
    *,
    one_means_every_step: bool = False,
) -> int:
    """First key iteration after t, or total + 1 when there is none."""
    for s in range(t + 1, total + 1):
        if is_key_iteration(s, total, schedule, init_interval, end_interval, one_means_every_step=one_means_every_step):
            return s
    return total + 1


def mutation_ratio(
    t: int,
    total: int,
    r0: float,
    r_t: float,
    schedule: MutationSchedule = "constant",
    init_alpha: float = 0.5,
    end_alpha: float = 0.5,
    base: MutationBase = "initial",
) -> float:
    """Share m of all samples drawn as mutants at iteration t (EVOS Eq. 7): alpha_t * base.

    ``base="initial"`` is what the official code runs (m = alpha * r0); ``"current"`` is the
    paper's text (m = alpha * r_t). They agree for the constant scheduler. alpha_t follows the
    official expressions: linear ``a0 + ((a1 - a0) / T) * t``; exp ``a0 * exp(-lam * t)`` with
    ``lam = -log(a1 / a0) / T`` in numpy float64.
    """
    if schedule == "constant":
        alpha = init_alpha
    elif schedule == "linear":
        alpha = init_alpha + ((end_alpha - init_alpha) / total) * t
    elif schedule == "exp":
        if init_alpha == 0:
            alpha = 0.0  # the official code divides by zero here; 0 * anything is the limit
        elif end_alpha == 0:
            alpha = init_alpha if t == 0 else 0.0  # official: log(0) = -inf, so exp(-inf * t) = 0 for t > 0
        else:
            decay = -np.log(end_alpha / init_alpha) / total
            alpha = float(init_alpha * np.exp(-decay * t))
    else:
        raise ValueError(f"unknown mutation schedule {schedule!r}")
    ratio_base = r0 if base == "initial" else r_t
    # Never more than r_t. Within the official domain (alpha <= 1, r_t >= r0) this binds at most by
    # rounding, and then the step trains on the same samples (no survivors, nothing left to mutate).
    return min(alpha * ratio_base, r_t)


def split_counts(num_samples: int, r_t: float, m: float) -> tuple[int, int]:
    """(survivors, mutants) of a non-key step, as the official code truncates them.

    survivors = int((r_t - m) * N) and mutants = int(m * N), capped by the N - survivors samples
    left to draw from. These are the formula's counts: a survivor count of 0 is returned as 0,
    and the caller decides what that means (the official code's ``pi[-0:]`` then trains on every
    sample; see ``Evolution.plan``).
    """
    n = int(num_samples)
    num_selected = min(max(int((r_t - m) * n), 0), n)
    num_mutants = min(max(int(m * n), 0), n - num_selected)
    return num_selected, num_mutants


def parent_count(num_samples: int, r_t: float, m: float) -> int:
    """Size k' of each crossover parent at a key iteration: N - int((1 - r_t + m) * N).

    This is how the official code sizes the parents (it counts the samples left out first), so
    k' is one more than ``split_counts``'s survivors whenever (r_t - m) * N is fractional.
    """
    n = int(num_samples)
    return min(max(n - int((1 - r_t + m) * n), 0), n)
