import pytest

from evos_nerf.core import key_interval, key_iterations, mutation_ratio, next_key_iteration, sample_ratio, split_counts
from evos_nerf.errors import UserInputError
from evos_nerf.core.schedules import check_ratio


def test_key_iterations_match_the_official_schedule_for_5000_steps():
    keys = key_iterations(5000)
    assert len(keys) == 72
    assert keys[:7] == [1, 100, 197, 292, 385, 476, 565]
    assert keys[-3:] == [4897, 4901, 4951]


def test_key_interval_shrinks_linearly_from_100_to_50():
    assert key_interval(0, 5000) == 100
    assert key_interval(2500, 5000) == 75
    assert key_interval(5000, 5000) == 50


def test_fixed_schedule_keeps_a_constant_interval():
    assert key_iterations(500, "fixed", init_interval=100) == [1, 101, 201, 301, 401]


def test_next_key_iteration_after_the_last_is_past_the_end():
    assert next_key_iteration(1, 5000) == 100
    assert next_key_iteration(4951, 5000) == 5001


def test_step_scheduler_rises_in_ten_stages_to_one():
    assert sample_ratio(1, 5000, 0.2, "step") == pytest.approx(0.2)
    assert sample_ratio(499, 5000, 0.2, "step") == pytest.approx(0.2)
    assert sample_ratio(500, 5000, 0.2, "step") == pytest.approx(0.28)
    assert sample_ratio(4999, 5000, 0.2, "step") == pytest.approx(0.92)
    assert sample_ratio(5000, 5000, 0.2, "step") == pytest.approx(1.0)


def test_linear_and_cosine_go_from_r0_to_one():
    for kind in ("linear", "cosine"):
        assert sample_ratio(0, 100, 0.3, kind) == pytest.approx(0.3)
        assert sample_ratio(100, 100, 0.3, kind) == pytest.approx(1.0)
    assert sample_ratio(50, 100, 0.3, "cosine") == pytest.approx(0.65)


def test_selection_sizes_constant_scheduler():
    r = sample_ratio(10, 5000, 0.5, "constant")
    m = mutation_ratio(10, 5000, 0.5, r)
    assert split_counts(1000, r, m) == (250, 250)
    assert split_counts(262144, r, m) == (65536, 65536)


def test_selection_sizes_step_scheduler_use_the_initial_ratio_for_mutation():
    # Official code: mutants stay alpha * r0 = 10% of N while the selected share grows.
    for t, expected in [(1, (100, 100)), (500, (180, 100)), (4999, (820, 100)), (5000, (900, 100))]:
        r = sample_ratio(t, 5000, 0.2, "step")
        assert split_counts(1000, r, mutation_ratio(t, 5000, 0.2, r)) == expected


def test_paper_mutation_base_scales_with_the_current_ratio():
    r = sample_ratio(500, 5000, 0.2, "step")
    assert split_counts(1000, r, mutation_ratio(500, 5000, 0.2, r, base="current")) == (140, 140)


def test_mutation_ratio_schedules_interpolate_alpha():
    assert mutation_ratio(0, 100, 0.5, 0.5, "linear", 0.5, 0.1) == pytest.approx(0.25)
    assert mutation_ratio(100, 100, 0.5, 0.5, "linear", 0.5, 0.1) == pytest.approx(0.05)
    assert mutation_ratio(50, 100, 0.5, 0.5, "exp", 0.4, 0.1) == pytest.approx(0.5 * 0.2)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval_is_rejected_with_its_value(bad):
    with pytest.raises(UserInputError, match="ratio must be in"):
        check_ratio("ratio", bad)
