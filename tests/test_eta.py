"""Predicted completion: hand-computed cases for each source and the blend."""

from __future__ import annotations

import math

import pytest

from tracker._ops.eta import ProgressCurve, predict_total, rate_only


def test_rate_only_extrapolates_the_rate_so_far():
    assert rate_only(600, 0.25) == 2400
    assert rate_only(600, 0.0) is None
    assert rate_only(0, 0.5) is None
    assert rate_only(600, 1.7) == 600  # progress past 100 % is read as 100 %


def test_without_history_the_prediction_is_the_rate():
    assert predict_total(600, 0.25) == 2400


def test_before_any_progress_the_history_median_is_the_prediction():
    assert predict_total(60, 0.0, [1000, 1200, 5000]) == 1200


def test_nothing_known_predicts_nothing():
    assert predict_total(60, 0.0) is None


def test_the_blend_weighs_the_run_by_its_progress():
    # 25 % done: 0.25 * rate (2400) + 0.75 * history (1200) = 1500
    assert predict_total(600, 0.25, [1200]) == pytest.approx(1500)


def test_a_prediction_is_never_shorter_than_what_already_passed():
    # Past runs were at 90 % of their time by mid-run and took 100 s; this one is far slower.
    curve = ProgressCurve(marks=(0.5,), time_fractions=(0.9,))
    assert predict_total(5000, 0.5, [100, 100], curve) == 5000


def test_the_curve_maps_progress_to_time_through_past_runs():
    # Past runs: the first half of the subtasks took 80 % of the time.
    curve = ProgressCurve.from_runs([[(0.5, 0.8)], [(0.5, 0.7)], [(0.5, 0.9)]])
    assert curve == ProgressCurve(marks=(0.5,), time_fractions=(0.8,))
    assert curve.time_fraction_at(0.25) == pytest.approx(0.4)
    assert curve.time_fraction_at(0.75) == pytest.approx(0.9)
    assert curve.time_fraction_at(0.0) == 0.0
    assert curve.time_fraction_at(1.0) == 1.0
    # 50 % done after 800 s: the curve says 80 % of the time passed, so 1000 s in all;
    # blended half and half with a history median of 1200 s.
    assert predict_total(800, 0.5, [1200], curve) == pytest.approx(0.5 * 1000 + 0.5 * 1200)


def test_a_noisy_curve_never_goes_back_in_time():
    curve = ProgressCurve.from_runs([[(0.25, 0.5), (0.5, 0.4), (0.75, 0.9)]])
    assert curve is not None
    assert list(curve.time_fractions) == [0.5, 0.5, 0.9]


@pytest.mark.parametrize("points", [[], [(0.0, 0.1)], [(1.0, 1.0)], [(0.5, math.nan)]])
def test_points_outside_the_open_interval_give_no_curve(points):
    assert ProgressCurve.from_runs([points]) is None
