"""Schedules of EVOS: how many samples to train on, when to re-evaluate fitness, and how many mutants.

Iterations are 1-based (t = 1 .. T), as in the official EVOS code, because the key-iteration
rule ``t mod I(t) == 1`` relies on t = 1 being the first step.
"""

from __future__ import annotations

import math
from typing import List, Literal

from evos_nerf.errors import UserInputError

SampleRatioSchedule = Literal["constant", "step", "linear", "cosine"]
KeyIterationSchedule = Literal["lin_dec", "fixed"]
MutationSchedule = Literal["constant", "linear", "exp"]
MutationBase = Literal["initial", "current"]

_EPS = 1e-9


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
    ``linear`` and ``cosine`` grow smoothly from r0 to 1 over the run.
    """
    progress = min(max(t / total, 0.0), 1.0)
    if schedule == "constant":
        r = r0
    elif schedule == "step":
        stage = math.floor(t / (total / 10))
        r = r0 + stage * (1.0 - r0) / 10.0
    elif schedule == "linear":
        r = r0 + (1.0 - r0) * progress
    elif schedule == "cosine":
        r = r0 + (1.0 - r0) * 0.5 * (1.0 - math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown sample-ratio schedule {schedule!r}")
    return min(r, 1.0)


def key_interval(
    t: int, total: int, schedule: KeyIterationSchedule = "lin_dec", init_interval: int = 100, end_interval: int = 50
) -> int:
    """Fitness-evaluation interval I(t) = floor(tau + (tau_end - tau) * t / T) (EVOS Eq. 2).

    Integer arithmetic keeps the floor exact: float rounding would move key iterations.
    """
    if schedule == "fixed":
        return init_interval
    if schedule == "lin_dec":
        return max(1, (init_interval * total + (end_interval - init_interval) * t) // total)
    raise ValueError(f"unknown key-iteration schedule {schedule!r}")


def is_key_iteration(
    t: int, total: int, schedule: KeyIterationSchedule = "lin_dec", init_interval: int = 100, end_interval: int = 50
) -> bool:
    """EVOS sparse fitness evaluation: t is a key iteration iff t mod I(t) == 1 (so t = 1 always is)."""
    interval = key_interval(t, total, schedule, init_interval, end_interval)
    if interval == 1:
        return True
    return t % interval == 1


def key_iterations(
    total: int, schedule: KeyIterationSchedule = "lin_dec", init_interval: int = 100, end_interval: int = 50
) -> List[int]:
    """All key iterations of a run of ``total`` iterations (72 for T = 5000 with the defaults)."""
    return [t for t in range(1, total + 1) if is_key_iteration(t, total, schedule, init_interval, end_interval)]


def next_key_iteration(
    t: int, total: int, schedule: KeyIterationSchedule = "lin_dec", init_interval: int = 100, end_interval: int = 50
) -> int:
    """First key iteration after t, or total + 1 when there is none."""
    for s in range(t + 1, total + 1):
        if is_key_iteration(s, total, schedule, init_interval, end_interval):
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
    """Share m of all samples drawn as mutants at iteration t (EVOS Eq. 7).

    ``base="initial"`` is what the official code runs (m = alpha * r0); ``"current"`` is the
    paper's text (m = alpha * r_t). They agree for the constant scheduler.
    """
    progress = min(max(t / total, 0.0), 1.0)
    if schedule == "constant":
        alpha = init_alpha
    elif schedule == "linear":
        alpha = init_alpha + (end_alpha - init_alpha) * progress
    elif schedule == "exp":
        if init_alpha <= 0 or end_alpha <= 0:
            alpha = init_alpha + (end_alpha - init_alpha) * progress
        else:
            alpha = init_alpha * (end_alpha / init_alpha) ** progress
    else:
        raise ValueError(f"unknown mutation schedule {schedule!r}")
    ratio_base = r0 if base == "initial" else r_t
    return min(alpha * ratio_base, r_t)


def split_counts(num_samples: int, r_t: float, m: float) -> tuple[int, int]:
    """(number selected by fitness, number of mutants) for one step; together they make ~r_t * N."""
    num_mutants = int(math.floor(m * num_samples + _EPS))
    num_selected = int(math.floor((r_t - m) * num_samples + _EPS))
    num_selected = max(0, min(num_selected, num_samples - num_mutants))
    return num_selected, num_mutants
