"""error_concentration on errors whose answer is known by hand."""

import math

import torch

from evos_nerf.core.fitness_stats import error_concentration


def test_equal_errors_need_every_pixel():
    out = error_concentration(torch.full((100,), 0.3))
    assert math.isclose(out["support"], 1.0, rel_tol=1e-12)
    assert math.isclose(out["top_0.25"], 0.25, rel_tol=1e-12)
    assert out["pixels"] == 100


def test_error_on_k_pixels_has_support_k_over_n():
    e = torch.zeros(200)
    e[:10] = 2.0  # 5% of the pixels hold all of it, equally
    out = error_concentration(e, shares=(0.05, 0.025))
    assert math.isclose(out["support"], 10 / 200, rel_tol=1e-12)
    assert math.isclose(out["top_0.05"], 1.0, rel_tol=1e-12)
    assert math.isclose(out["top_0.025"], 0.5, rel_tol=1e-12)


def test_two_levels():
    # 1 pixel at 9, 3 at 1: E[sqrt e] = (3 + 3) / 4, E[e] = 12 / 4, support = 2.25 / 3 = 0.75.
    out = error_concentration(torch.tensor([1.0, 9.0, 1.0, 1.0]), shares=(0.25, 0.5))
    assert math.isclose(out["support"], 0.75, rel_tol=1e-12)
    assert math.isclose(out["top_0.25"], 9 / 12, rel_tol=1e-12)
    assert math.isclose(out["top_0.5"], 10 / 12, rel_tol=1e-12)


def test_non_finite_values_are_left_out_and_no_error_is_nan():
    out = error_concentration(torch.tensor([1.0, float("nan"), float("inf"), 1.0]))
    assert out["pixels"] == 2 and math.isclose(out["support"], 1.0)
    empty = error_concentration(torch.zeros(5))
    assert math.isnan(empty["support"]) and math.isnan(empty["top_0.5"])
