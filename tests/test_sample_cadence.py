"""The thinning of a run's resource samples, driven by an injected clock."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tracker._sampling import DEFAULT_TIERS, SampleCadence, SampleSchedule

HOUR = 3600.0


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def simulate(duration: float, tick: float, *, jitter: float = 0.0, seed: int = 17) -> list[float]:
    """The run ages at which a writer cycling every ``tick`` seconds (give or take ``jitter``)
    keeps a sample, the final one included."""
    clock = FakeClock()
    schedule = SampleSchedule(clock=clock)
    rng = random.Random(seed)  # noqa: S311 - a reproducible jitter, no secret
    kept: list[float] = []
    end = clock.now + duration
    while clock.now < end:
        if schedule.due():
            schedule.kept()
            kept.append(schedule.age())
        clock.now = min(clock.now + tick + rng.uniform(-jitter, jitter), end)
    assert schedule.due(final=True)
    schedule.kept()
    kept.append(schedule.age())
    return kept


@pytest.mark.parametrize(
    ("duration", "tick", "bound"),
    [
        (6 * HOUR, 0.5, 660),  # 360 + 5 h x 60 = 660 (the 2 extra of max_rows: first and last)
        (3 * 24 * HOUR, 0.5, 4620),
        (3 * 24 * HOUR, 7.3, 4620),  # a slow writer cycle keeps fewer, never more
    ],
    ids=["6h", "3d", "3d-slow-cycle"],
)
def test_a_long_run_keeps_a_bounded_number_of_samples_with_first_and_last(duration, tick, bound):
    kept = simulate(duration, tick, jitter=min(tick / 2, 0.2))
    cadence = SampleCadence()
    assert kept[0] == 0.0  # the first sample, at the run's start
    assert kept[-1] == pytest.approx(duration)  # the last, at its end
    assert len(kept) <= cadence.max_rows(duration) <= bound + 2
    assert len(kept) < 5000  # "a 3-day run stays under a few thousand rows"
    for before, age in itertools.pairwise(kept):
        gap = age - before
        expected = cadence.interval(age)
        # never denser than the cadence, and never much sparser than the writer's cycle allows
        assert gap >= expected or age == kept[-1]
        assert gap <= max(cadence.interval(age - gap), expected) + tick + 0.2


def test_the_first_hour_keeps_one_sample_per_10_seconds_then_one_per_minute():
    kept = simulate(2 * HOUR, 0.5)
    first_hour = [age for age in kept if age < HOUR]
    second_hour = [age for age in kept if HOUR <= age < 2 * HOUR]
    assert len(first_hour) == 360
    assert len(second_hour) == 60


def test_a_run_shorter_than_one_interval_keeps_its_first_and_last_sample():
    kept = simulate(3.0, 0.5)
    assert kept == [0.0, 3.0]


def test_the_default_is_the_documented_one():
    assert DEFAULT_TIERS == ((0.0, 10.0), (3600.0, 60.0))
    cadence = SampleCadence()
    assert [cadence.interval(age) for age in (0, 3599.9, 3600, 10 * 24 * HOUR)] == [10, 10, 60, 60]
    assert cadence.max_rows(3 * 24 * HOUR) == 4622


def test_due_is_a_pure_function_of_the_ages():
    cadence = SampleCadence()
    assert cadence.due(0.0, None)
    assert not cadence.due(9.99, 0.0)
    assert cadence.due(10.0, 0.0)
    assert not cadence.due(3659.0, 3600.0)
    assert cadence.due(3660.0, 3600.0)
    assert cadence.due(1.0, 0.9, final=True)


def test_custom_tiers_thin_further():
    cadence = SampleCadence(((0.0, 10.0), (3600.0, 60.0), (86400.0, 300.0)))
    assert cadence.max_rows(3 * 24 * HOUR) == 2 + 360 + 1380 + 576


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        ((10.0, 5.0),),
        ((0.0, 0.0),),
        ((0.0, -1.0),),
        ((0.0, math.nan),),
        ((0.0, math.inf),),
        ((0.0, 10.0), (0.0, 60.0)),
        ((0.0, 10.0), (7200.0, 60.0), (3600.0, 30.0)),
        ((0.0, 10.0), (math.nan, 60.0)),
    ],
)
def test_tiers_that_make_no_sense_are_refused(tiers):
    with pytest.raises(ValueError, match="tier"):
        SampleCadence(tiers)
