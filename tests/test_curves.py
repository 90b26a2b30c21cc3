"""Reading training curves: interpolated time-to-target and values at equal time."""

import pytest

from evos_nerf.curves import reach, value_at

HISTORY = [{"step": 60, "train_seconds": 40.0, "psnr": 18.0}, {"step": 120, "train_seconds": 80.0, "psnr": 21.0}]


def test_where_a_run_reaches_a_psnr_is_interpolated_between_evaluations():
    assert reach(HISTORY, 20.0, "step") == pytest.approx(100)
    assert reach(HISTORY, 20.0, "train_seconds") == pytest.approx(200 / 3)
    assert reach(HISTORY, 17.0, "step") == 60  # already there at the first evaluation
    assert reach(HISTORY, 22.0, "step") is None  # never reached


def test_values_at_equal_time_are_interpolated_and_clamped_to_the_measured_range():
    assert value_at(HISTORY, "train_seconds", 60.0, "psnr") == pytest.approx(19.5)
    assert value_at(HISTORY, "train_seconds", 10.0, "psnr") == 18.0
    assert value_at(HISTORY, "train_seconds", 500.0, "psnr") == 21.0
