"""The reward-hacking alarm's arithmetic (grpo_cli.divergence), on exact sequences."""

from __future__ import annotations

from grpo_cli.divergence import Alarm, Point, diverging


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
    held = [0.9, 0.7, 0.5, 0.3, 0.3, 0.1, 0.1]
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
        "reward hacking? at step 50 the held-out eval/rewards/accuracy fell 0.300 -> 0.100 since step 40 while "
        "the training reward rose 0.400 -> 0.500 (eval.alarm_window 2, eval.alarm_drop 0.1)"
    )
