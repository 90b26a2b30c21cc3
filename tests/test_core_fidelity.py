"""Golden fidelity tests: the image path counts and selects exactly what the official EVOS code does.

Official code: github.com/zwx-open/EVOS-INR at commit 3261484 (2025-04-05). Files cited below:
  [SCHED]   components/nmt/scheduler.py   (sample-ratio schedulers)
  [TRAINER] trainer/img_sampling_trainer.py (key iterations, counts, crossover, mutation)
  [OPT]     opt.py                        (defaults: init_interval 100, end_interval 50, ...)

Every expected value here was derived by evaluating the cited official expressions (a numpy/torch
transcription of those lines, run outside this repository) on the inputs written in each test.
Nothing is computed by this project's code to get the expected values; the index sets are written
out. Inputs have no ties (argsort and top-k order ties differently).

The official conventions these tests pin down:
  - counts are ``int()`` truncations with no epsilon ([TRAINER] L289, L295, L368-369, L382-386);
  - the crossover parent size is k' = N - int((1 - r_t + m) * N) ([TRAINER] L366-369);
  - the ranking kept until the next key iteration is [rest by e (or e + l for add), offspring],
    and a step trains on its last k entries ([TRAINER] L291-292, L339-340, L395-399);
  - ``x[-0:]`` is the whole tensor ([TRAINER] L292, L371-372, L390-391).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evos_nerf.core import (
    Evolution,
    EvolutionConfig,
    crossover,
    is_key_iteration,
    key_interval,
    key_iterations,
    mutation_ratio,
    parent_count,
    sample_ratio,
    split_counts,
)

# -- key iterations -------------------------------------------------------------------------------

# [TRAINER] L314-325: key iff t % int(100 + ((50 - 100) / 5000) * t) == 1; [OPT] L334-353 defaults.
KEYS_T5000 = [
    1, 100, 197, 292, 385, 476, 565, 652, 737, 820, 901, 991, 1069, 1145, 1219, 1377, 1446, 1513,
    1597, 1661, 1723, 1864, 1921, 2055, 2107, 2185, 2234, 2357, 2401, 2476, 2517, 2591, 2629, 2737,
    2841, 2941, 3037, 3129, 3197, 3217, 3284, 3301, 3367, 3446, 3521, 3585, 3655, 3721, 3783, 3844,
    3901, 3961, 4013, 4072, 4119, 4177, 4219, 4276, 4313, 4369, 4401, 4456, 4537, 4591, 4612, 4665,
    4733, 4785, 4846, 4897, 4901, 4951,
]  # fmt: skip


def test_the_72_key_iterations_of_a_5000_step_run():
    assert key_iterations(5000) == KEYS_T5000
    assert len(KEYS_T5000) == 72


def test_key_interval_is_the_official_float_expression():
    # [TRAINER] L324-325: int(100 + (-50 / 151) * 151) = int(49.99999999999999) = 49, not the exact 50,
    # so t = 151 (151 % 49 = 4) is no key iteration at T = 151; exact arithmetic would make it one.
    assert key_interval(151, 151) == 49
    assert not is_key_iteration(151, 151)
    assert key_iterations(151) == [1]
    # int(10 + (-5 / 147) * 147) = 4 (exact: 5).
    assert key_interval(147, 147, "lin_dec", 10, 5) == 4


def test_an_interval_of_one_never_makes_a_key_iteration():
    # [TRAINER] L316: t % 1 == 1 is never true.
    assert key_iterations(50, "fixed", 1, 1) == []
    # lin_dec 3 -> 1 over T = 12: the interval int(3 + (-2 / 12) t) is 2 up to t = 6 and 1 from t = 7 on.
    assert key_iterations(12, "lin_dec", 3, 1) == [1, 3, 5]
    assert key_iterations(30, "lin_dec", 4, 1) == [1, 4, 7, 10, 11, 13, 15, 17, 19]
    # A caller that wants "every step" at an interval of 1 asks for it.
    assert key_iterations(50, "fixed", 1, 1, one_means_every_step=True) == list(range(1, 51))


def test_a_run_whose_interval_is_one_trains_on_everything_at_t1_and_never_re_ranks():
    # The official code has no ranking at t = 1 here and stops (KeyError); ours trains on all samples.
    evo = Evolution(EvolutionConfig(key_schedule="fixed", init_interval=1, end_interval=1), 40, 10,
                    torch.Generator().manual_seed(0))
    first = evo.plan(1)
    assert first.key and first.indices is None
    evo.evolve(1, torch.arange(40, dtype=torch.float32), torch.arange(40, dtype=torch.float32).flip(0))
    assert not any(evo.is_key(t) for t in range(2, 11))
    assert not evo.plan(2).key


# -- counts ---------------------------------------------------------------------------------------

# (ratio schedule, r0, mutation schedule, alpha0, alpha1, N, T, t) -> (survivors, mutants) of a non-key
# step. [SCHED] L19-36 (r_t), [TRAINER] L269-284 (m), L287-299 (int((r_t - m) N), int(m N)).
# Each case is one where the previous implementation (epsilon, reordered formulas) was off by one.
COUNT_GOLDENS = [
    # epsilon before flooring: (0.43 - 0.025) * 1000 = 404.99999999999994
    ("step", 0.05, "constant", 0.5, 0.5, 1000, 1000, 400, (404, 25)),
    # step written as r0 + stage * ((1 - r0) / 10): 0.5499999999999999 at stage 5
    ("step", 0.1, "constant", 0.5, 0.5, 100, 1000, 500, (49, 5)),
    ("step", 0.1, "linear", 0.5, 0.2, 100, 1000, 1000, (97, 2)),
    # cosine written as 1 - 1/2 (1 - r0)(1 + cos(t / T pi))
    ("cosine", 0.1, "linear", 0.5, 0.2, 1000, 1000, 500, (515, 34)),
    ("cosine", 0.35, "exp", 0.4, 0.1, 100, 1000, 500, (60, 6)),
    # linear ratio
    ("linear", 0.05, "constant", 0.5, 0.5, 100, 1000, 300, (30, 2)),
    # linear mutation a0 + ((a1 - a0) / T) t
    ("constant", 0.3, "linear", 0.5, 0.2, 1000, 1000, 900, (230, 69)),
    ("constant", 0.1, "linear", 0.5, 0.2, 1000, 1000, 500, (65, 34)),
    # exp mutation a0 exp(-lam t), lam = -log(a1 / a0) / T (numpy)
    ("constant", 0.3, "exp", 0.5, 0.2, 100, 5000, 5000, (24, 5)),
    ("constant", 0.35, "exp", 0.5, 0.2, 100, 1000, 1000, (27, 6)),
    ("step", 0.3, "exp", 0.5, 0.2, 100, 5000, 5000, (94, 5)),
]


@pytest.mark.parametrize("kind,r0,mkind,a0,a1,n,total,t,expected", COUNT_GOLDENS)
def test_step_counts_equal_the_official_counts(kind, r0, mkind, a0, a1, n, total, t, expected):
    r = sample_ratio(t, total, r0, kind)
    m = mutation_ratio(t, total, r0, r, mkind, a0, a1)
    assert split_counts(n, r, m) == expected


def _official_ratio(kind: str, t: int, total: int, r0: float) -> float:
    """The official schedulers' expressions, [SCHED] L23-36, kept in their evaluation order."""
    if kind == "constant":
        return r0
    if kind == "linear":
        return r0 + (t / total) * (1.0 - r0)
    if kind == "step":
        return min(r0 + (t // (total / 10)) * ((1.0 - r0) / 10), 1.0)
    return 1.0 - 1 / 2 * (1.0 - r0) * (1 + math.cos(t / total * math.pi))


def _official_mutation(kind: str, t: int, total: int, r0: float, a0: float, a1: float) -> float:
    """[TRAINER] L269-284."""
    if kind == "constant":
        return a0 * r0
    if kind == "linear":
        return (a0 + ((a1 - a0) / total) * t) * r0
    return a0 * np.exp(-(-np.log(a1 / a0) / total) * t) * r0


@pytest.mark.parametrize("kind", ["constant", "step", "linear", "cosine"])
@pytest.mark.parametrize("mkind,a0,a1", [("constant", 0.5, 0.5), ("linear", 0.5, 0.2), ("exp", 0.4, 0.1)])
def test_counts_match_the_official_expressions_over_a_grid(kind, mkind, a0, a1):
    total = 5000
    for r0 in (0.05, 0.2, 0.35, 0.5, 0.7):
        for n in (97, 1000, 4096, 262144):
            for t in range(1, total + 1, 61):
                r = _official_ratio(kind, t, total, r0)
                m = _official_mutation(mkind, t, total, r0, a0, a1)
                assert sample_ratio(t, total, r0, kind) == r
                assert mutation_ratio(t, total, r0, r, mkind, a0, a1) == m
                survivors, mutants = int((r - m) * n), int(m * n)  # [TRAINER] L289, L295
                assert split_counts(n, r, m) == (survivors, min(mutants, n - survivors))
                assert parent_count(n, r, m) == n - int((1 - r + m) * n)  # [TRAINER] L366-369


# Step scheduler, r0 = 0.2, alpha = 0.5, 512 x 512 (Table 1's step-wise row): k' at each key
# iteration ([TRAINER] L366-369) and the survivors of a step ([TRAINER] L289); k' = k + 1 at all 72.
STEP_KEYS_512 = {  # r_t stage -> (k', k, mutants, key iterations in that stage)
    0.20: (26215, 26214, 26214, [1, 100, 197, 292, 385, 476]),
    0.28: (47186, 47185, 26214, [565, 652, 737, 820, 901, 991]),
    0.36: (68158, 68157, 26214, [1069, 1145, 1219, 1377, 1446]),
    0.44: (89129, 89128, 26214, [1513, 1597, 1661, 1723, 1864, 1921]),
    0.52: (110101, 110100, 26214, [2055, 2107, 2185, 2234, 2357, 2401, 2476]),
    0.60: (131073, 131072, 26214, [2517, 2591, 2629, 2737, 2841, 2941]),
    0.68: (152044, 152043, 26214, [3037, 3129, 3197, 3217, 3284, 3301, 3367, 3446]),
    0.76: (173016, 173015, 26214, [3521, 3585, 3655, 3721, 3783, 3844, 3901, 3961]),
    0.84: (193987, 193986, 26214, [4013, 4072, 4119, 4177, 4219, 4276, 4313, 4369, 4401, 4456]),
    0.92: (214959, 214958, 26214, [4537, 4591, 4612, 4665, 4733, 4785, 4846, 4897, 4901, 4951]),
}


def test_parent_size_differs_from_the_step_survivors_at_all_72_key_iterations():
    evo = Evolution(EvolutionConfig(ratio=0.2, ratio_schedule="step"), 512 * 512, 5000, torch.Generator())
    seen = []
    for stage, (k_parent, k_step, mutants, keys) in STEP_KEYS_512.items():
        for t in keys:
            assert evo.is_key(t)
            assert sample_ratio(t, 5000, 0.2, "step") == pytest.approx(stage)
            assert evo.parent_count(t) == k_parent, t
            assert evo.counts(t) == (k_step, mutants), t
            seen.append(t)
    assert seen == KEYS_T5000


def test_constant_half_ratio_at_512x512_has_equal_parent_and_step_sizes():
    r = sample_ratio(7, 5000, 0.5)
    m = mutation_ratio(7, 5000, 0.5, r)
    assert parent_count(512 * 512, r, m) == 65536
    assert split_counts(512 * 512, r, m) == (65536, 65536)


# -- crossover --------------------------------------------------------------------------------------

# N = 30. e ranks samples 0, 1, 2, ... (e_i = 30 - i). l ranks 20, 0, 21, 1, 2, 3, 4, 5, 6, 8, ...
E30 = torch.tensor([30.0 - i for i in range(30)])
L30 = torch.tensor([
    29.0, 27.0, 26.0, 25.0, 24.0, 23.0, 22.0, 11.0, 21.0, 10.0, 20.0, 9.0, 19.0, 8.0, 18.0,
    7.0, 17.0, 6.0, 16.0, 5.0, 30.0, 28.0, 15.0, 4.0, 14.0, 3.0, 13.0, 2.0, 12.0, 1.0,
])  # fmt: skip


def _evolve_once(n, e, l, total=5000, **config):
    evo = Evolution(EvolutionConfig(**config), n, total, torch.Generator().manual_seed(0))
    assert evo.plan(1).key
    offspring = evo.evolve(1, e, l)
    return evo, offspring


def test_parents_use_the_official_size_and_the_adaptive_split():
    # r = 0.5, m = 0.25, N = 30: k' = 30 - int(22.5) = 8 (the step keeps int(7.5) = 7).
    # Parents: by e {0..7}, by l {20, 0, 21, 1, 2, 3, 4, 5}; shared {0..5}, R = 2.
    # l scaled by 0.5: p = 15.5 / (7.75 + 15.5) = 2/3, int(2 * p) = 1 from e (6), 1 from l (20).
    evo, off = _evolve_once(30, E30, L30 * 0.5)
    assert evo.parent_count(1) == 8 and evo.counts(2) == (7, 7)
    assert off.num_shared == 6
    assert off.balance == pytest.approx(2 / 3)
    # [TRAINER] L388-399: ranking tail [l side, e side, shared by e]; fittest first it reads:
    assert off.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 20]
    plan = evo.plan(2)
    assert (plan.num_selected, plan.num_mutants) == (7, 7)
    assert plan.indices[:7].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert not set(plan.indices[7:].tolist()) & set(range(7))


def test_balance_is_rounded_in_float32_as_the_official_code():
    # N = 40, r = 0.5, m = 0.25: k' = 10, parents disjoint (e picks 0..9, l picks 10..19), R = 10.
    # mean(e) = 28/40 and mean(l) = 12/40 in float32; p = mean(e) / (mean(l) + mean(e)) = f32(0.7)
    # = 0.699999988, and 10 * p is 7.0 in float32 ([TRAINER] L382-385) but 6.99999988 in float64.
    e = torch.tensor([
        3.0, 2.875, 2.75, 2.625, 2.5, 2.375, 2.25, 2.125, 2.0, 1.875, 0.1640625, 0.171875, 0.015625,
        0.453125, 0.0546875, 0.2109375, 0.0859375, 0.125, 0.0234375, 0.1328125, 0.09375, 0.0703125,
        0.046875, 0.1875, 0.109375, 0.1171875, 0.15625, 0.078125, 0.0078125, 0.0625, 0.21875,
        0.1953125, 0.203125, 0.0, 0.1015625, 0.03125, 0.0390625, 0.1796875, 0.140625, 0.1484375,
    ])  # fmt: skip
    l = torch.tensor([
        0.1328125, 0.0546875, 0.0625, 0.2109375, 0.1953125, 0.265625, 0.0859375, 0.140625, 0.25,
        0.1875, 1.0, 0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625, 0.5, 0.4375, 0.109375, 0.125,
        0.078125, 0.21875, 0.0703125, 0.1015625, 0.171875, 0.15625, 0.28125, 0.1640625, 0.2421875,
        0.1796875, 0.046875, 0.234375, 0.2265625, 0.1484375, 0.1171875, 0.2578125, 0.09375, 0.203125,
    ])  # fmt: skip
    _, off = _evolve_once(40, e, l)
    assert off.num_shared == 0
    assert off.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 10, 11, 12]


def test_zero_picks_on_the_e_side_take_the_whole_remainders_as_the_official_code():
    # Same parents as above; l scaled by 2: p = 1/3, int(2 * p) = 0 from e, so l gives 2. The official
    # slice l2_remain_index[-0:] ([TRAINER] L391) then adds both e-only parents too: 10 offspring, not 8.
    _, off = _evolve_once(30, E30, L30 * 2.0)
    assert off.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 20, 21]
    _, guarded = _evolve_once(30, E30, L30 * 2.0, zero_pick_guard=True)
    assert guarded.indices.tolist() == [0, 1, 2, 3, 4, 5, 20, 21]


def test_zero_picks_on_the_l_side_take_the_whole_remainders_as_the_official_code():
    # l scaled by 1e-9: p rounds to 1.0 in float32, so e gives both picks and l gets 0; the official
    # lap_remain_index[-0:] ([TRAINER] L390) adds both l-only parents.
    _, off = _evolve_once(30, E30, L30 * 1e-9)
    assert off.balance == 1.0
    assert off.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 20, 21]
    _, guarded = _evolve_once(30, E30, L30 * 1e-9, zero_pick_guard=True)
    assert guarded.indices.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_the_crossover_operator_keeps_its_guard_unless_asked():
    # The shared operator guards by default (the ray path relies on it); the image path passes the flag.
    assert crossover(E30, L30 * 2.0, 8).indices.numel() == 8
    assert crossover(E30, L30 * 2.0, 8, zero_pick_guard=False).indices.numel() == 10


def test_zero_parents_and_zero_survivors_select_everything_as_the_official_code():
    # alpha = 1: m = r_t = 0.5, so k' = 30 - int(1.0 * 30) = 0 and a step keeps int(0 * 30) = 0.
    # [TRAINER] L371-372: sorted[-0:] makes both parents all 30 samples; L292: sorted[-0:] trains on all,
    # and L296 leaves nothing to mutate.
    evo, off = _evolve_once(30, E30, L30, init_mutation=1.0, end_mutation=1.0)
    assert evo.parent_count(1) == 0
    assert off.indices.tolist() == list(range(30))
    plan = evo.plan(2)
    assert not plan.key and plan.indices is None
    assert (plan.num_selected, plan.num_mutants) == (30, 0)
    # With the guard, 0 survivors means 0 survivors: the step is int(0.5 * 30) = 15 uniform mutants.
    evo, off = _evolve_once(30, E30, L30, init_mutation=1.0, end_mutation=1.0, zero_pick_guard=True)
    assert off.indices.numel() == 0
    plan = evo.plan(2)
    assert (plan.num_selected, plan.num_mutants) == (0, 15) and plan.indices.unique().numel() == 15


# Step scheduler r0 = 0.2, alpha = 0.5, T = 20, N = 30, one key iteration (t = 1; fixed interval 100),
# e = E30 and l = 0.75 * L30 (e + l has no ties). r_t rises every 2 steps, so later steps reach past the
# offspring into the rest of the official ranking: by e for select and none, by e + l for add.
# Survivors (sorted) at t = 2, 6, 10, 16, 20 from [TRAINER] L286-292 on the ranking of L327-399.
GROWING_RATIO_GOLDENS = {
    "select": {
        2: [0, 1, 2, 3, 20],
        6: [0, 1, 2, 3, 4, 5, 6, 7, 8, 20],
        10: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20],
        16: list(range(22)),
        20: list(range(27)),
    },
    "add": {
        2: [0, 1, 2, 3, 4],
        6: [0, 1, 2, 3, 4, 5, 6, 8, 10, 20],
        10: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 20, 21],
        16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22],
        20: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 28],
    },
    "none": {
        2: list(range(5)),
        6: list(range(10)),
        10: list(range(15)),
        16: list(range(22)),
        20: list(range(27)),
    },
}
GROWING_RATIO_COUNTS = {2: (5, 3), 6: (10, 3), 10: (15, 3), 16: (22, 3), 20: (27, 3)}


@pytest.mark.parametrize("method", ["select", "add", "none"])
def test_growing_ratio_extends_the_official_ranking(method):
    config = dict(ratio=0.2, ratio_schedule="step", crossover=method, key_schedule="fixed", init_interval=100)
    evo = Evolution(EvolutionConfig(**config), 30, 20, torch.Generator().manual_seed(0))
    assert evo.parent_count(1) == 3  # 30 - int(0.9 * 30)
    evo.evolve(1, E30, None if method == "none" else L30 * 0.75)
    for t, expected in GROWING_RATIO_GOLDENS[method].items():
        plan = evo.plan(t)
        assert (plan.num_selected, plan.num_mutants) == GROWING_RATIO_COUNTS[t], t
        assert sorted(plan.indices[: plan.num_selected].tolist()) == expected, t
        assert plan.indices.unique().numel() == plan.indices.numel()


# -- from an image --------------------------------------------------------------------------------

# A 9 x 9 RGB image with values (17 i + 29 j + 53 c + 7 i j) mod 256 and a prediction equal to the
# encoded target plus 0.05 sin(1.7 n + 0.9 c + 0.3) (pixel n, channel c). r0 = 0.3, so N = 81 gives
# k' = 81 - int(0.85 * 81) = 13 and a step keeps int(0.15 * 81) = 12. Fitness maps as [TRAINER]
# L328-361 (L2 error in the [-1, 1] encoding; lambda * squared Laplacian difference of the 0-255
# grayscale, components/laplacian.py); offspring fittest first, then the survivors of step 2.
IMAGE_GOLDENS = {
    "select": ([15, 52, 28, 26, 65, 41, 76, 54, 67, 43, 17, 19, 56],
               [15, 17, 19, 26, 28, 41, 43, 52, 54, 65, 67, 76]),
    "add": ([65, 28, 52, 41, 54, 15, 26, 67, 17, 43, 19, 56, 13],
            [15, 17, 19, 26, 28, 41, 43, 52, 54, 56, 65, 67]),
    "none": ([15, 76, 39, 52, 63, 28, 2, 4, 26, 65, 50, 41, 74],
             [2, 4, 15, 26, 28, 39, 41, 50, 52, 63, 65, 76]),
}  # fmt: skip


@pytest.mark.parametrize("method", ["select", "add", "none"])
def test_selection_from_an_image_and_a_prediction(method):
    from evos_nerf.image.signal import ImageSignal
    from evos_nerf.image.strategies import Evos

    h = w = 9
    values = torch.tensor(
        [[[float((17 * i + 29 * j + 53 * c + 7 * i * j) % 256) for c in range(3)] for j in range(w)] for i in range(h)]
    )
    rgb = values / 255.0
    signal = ImageSignal("golden", rgb, float(rgb.min()), float(rgb.max()))
    delta = torch.tensor([[0.05 * math.sin(1.7 * n + 0.9 * c + 0.3) for c in range(3)] for n in range(h * w)])
    strategy = Evos(EvolutionConfig(ratio=0.3, crossover=method), h * w, 5000, torch.Generator().manual_seed(0),
                    signal, signal.targets())
    first = strategy.plan(1, None)
    assert first.key
    strategy.observe(1, first, signal.targets() + delta)
    offspring, survivors = IMAGE_GOLDENS[method]
    elite = strategy.evolution.elite.tolist()
    assert elite[:13] == offspring[:13]
    plan = strategy.plan(2, None)
    assert (plan.num_selected, plan.num_mutants) == (12, 12)
    assert sorted(plan.indices[:12].tolist()) == survivors
