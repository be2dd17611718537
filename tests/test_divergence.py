"""The reward-hacking alarm's arithmetic (grpo_cli.divergence), on exact sequences."""

from __future__ import annotations

import pytest

from grpo_cli.divergence import Alarm, Point, diverging, noise


def points(train, held):
    return [Point(10 * i, t, h) for i, (t, h) in enumerate(zip(train, held, strict=True))]


def test_rising_reward_and_falling_metric_diverge():
    assert diverging(points([0.5, 0.6, 0.7], [0.8, 0.7, 0.6]), window=3, drop=0.1)


def test_the_drop_must_exceed_the_threshold():
    # Binary fractions, so that "fell exactly 0.25" is exact.
    assert not diverging(
        points([0.5, 0.6, 0.7], [1.0, 0.75, 0.75]), window=3, drop=0.25
    )  # fell 0.25: not more
    assert diverging(points([0.5, 0.6, 0.7], [1.0, 0.75, 0.625]), window=3, drop=0.25)


def test_no_alarm_when_the_reward_does_not_rise_or_the_metric_does_not_fall():
    assert not diverging(points([0.7, 0.6, 0.7], [0.8, 0.7, 0.6]), window=3, drop=0.1)  # reward level
    assert not diverging(points([0.5, 0.6, 0.7], [0.6, 0.7, 0.8]), window=3, drop=0.1)  # both rise: learning
    assert not diverging(points([0.7, 0.6, 0.5], [0.8, 0.7, 0.6]), window=3, drop=0.1)  # both fall


def test_only_the_last_window_counts_and_fewer_points_are_no_alarm():
    assert not diverging(points([0.5, 0.6], [0.8, 0.6]), window=3, drop=0.1)
    # Over the last 2 of 4: reward 0.6 -> 0.7, metric 0.9 -> 0.85 (fell 0.05 only); the drop before is older.
    assert not diverging(points([0.4, 0.5, 0.6, 0.7], [1.0, 0.5, 0.9, 0.85]), window=2, drop=0.1)


def test_missing_values_at_the_window_ends_are_no_alarm():
    assert not diverging(points([None, 0.6, 0.7], [0.8, 0.7, 0.6]), window=3, drop=0.1)
    assert not diverging(points([0.5, 0.6, 0.7], [0.8, 0.7, None]), window=3, drop=0.1)


def test_the_alarm_trips_once_per_episode_and_again_after_it_clears():
    alarm = Alarm(window=2, drop=0.1, metric="eval/rewards/accuracy")
    train = [0.1, 0.2, 0.3, 0.4, 0.4, 0.5, 0.6]
    held = [0.9, 0.7, 0.85, 0.9, 0.9, 0.6, 0.6]  # back within 0.1 of 0.9 at step 20: the episode ends
    tripped = [alarm.add(p) for p in points(train, held)]
    assert [t["step"] if t else None for t in tripped] == [None, 10, None, None, None, 50, None]
    assert alarm.trips[0] == {
        "step": 10,
        "since_step": 0,
        "metric": "eval/rewards/accuracy",
        "held_out": [0.9, 0.7],
        "train_reward": [0.1, 0.2],
    }
    assert alarm.message(alarm.trips[1]) == (
        "reward hacking? at step 50 the held-out eval/rewards/accuracy fell 0.900 -> 0.600 since step 40 while "
        "the training reward rose 0.400 -> 0.500 (eval.alarm_window 2, eval.alarm_drop 0.1)"
    )


def test_an_episode_that_stops_qualifying_for_a_window_is_still_one_episode():
    """A training reward that levels for one evaluation, while the held-out metric stays down, is no new alarm."""
    alarm = Alarm(window=2, drop=0.1, metric="eval/rewards/accuracy")
    tripped = [alarm.add(p) for p in points([0.1, 0.2, 0.2, 0.3, 0.4], [0.9, 0.7, 0.72, 0.5, 0.3])]
    assert [t["step"] if t else None for t in tripped] == [None, 10, None, None, None]


def test_a_drop_within_the_held_out_sets_noise_is_no_alarm():
    """The addition recipe holds out 11 problems: one more missed is 0.818 -> 0.727 (std 0.386 -> 0.445), which
    twice the noise of the difference (2 * 0.178) covers; on 200 samples the same drop is well above it."""
    window = [Point(100, 0.6, 9 / 11, 0.386), Point(200, 2.0, 9 / 11, 0.386), Point(300, 2.3, 8 / 11, 0.445)]
    assert not diverging(window, window=3, drop=0.05, samples=11)
    assert diverging(window, window=3, drop=0.05, samples=200)
    assert diverging(window, window=3, drop=0.05)  # spreads unknown: the drop alone decides
    assert noise(window[0], window[-1], 11) == pytest.approx(((0.386**2 + 0.445**2) / 11) ** 0.5)
