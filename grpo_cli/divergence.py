"""The reward-hacking alarm: the training reward rising while the held-out task metric falls.

Pure arithmetic over the evaluations made during training (`eval_during_training`), so every trip can be checked by
hand. Over the last K evaluations (`eval.alarm_window`), the alarm trips when

    the training reward rose:        train[-1] > train[-K]
    and the held-out metric fell:    held[-K] - held[-1] > max(drop, 2 * noise)

`drop` is `eval.alarm_drop`, in the metric's units. `noise` is the standard error of that difference when the
evaluations' spreads are known: sqrt(std[-K]**2 + std[-1]**2) / sqrt(n) over n held-out samples, so that on a
small held-out set one more problem missed (1/11 = 0.09 on the addition recipe's 11) is not an alarm.

The training reward of an evaluation is the mean reward logged since the evaluation before it, so one noisy step
does not decide. It warns once per episode: once tripped it stays quiet until the held-out metric is back within
`drop` of where it was when the episode began, then may trip again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "eval/"  # metrics.jsonl's names of held-out evaluation's metrics


@dataclass(frozen=True)
class Point:
    """One evaluation: its step, the training reward around it, the held-out metric it measured."""

    step: int
    train: float | None
    held_out: float | None
    std: float | None = None  # the held-out metric's standard deviation over the samples evaluated


def diverging(points: list[Point], window: int, drop: float, samples: int | None = None) -> bool:
    """Whether the last `window` points show the training reward rising while the held-out metric fell by more
    than `drop` and than twice its noise over `samples` held-out samples (see the module docstring). Fewer points,
    or a missing value among the two ends, is no alarm."""
    if window < 2 or len(points) < window:
        return False
    first, last = points[-window], points[-1]
    if None in (first.train, last.train, first.held_out, last.held_out):
        return False
    return last.train > first.train and first.held_out - last.held_out > max(
        drop, 2 * noise(first, last, samples)
    )


def noise(first: Point, last: Point, samples: int | None) -> float:
    """The standard error of `first.held_out - last.held_out` (0 when the spreads or the count are unknown)."""
    if not samples or first.std is None or last.std is None:
        return 0.0
    return ((first.std**2 + last.std**2) / samples) ** 0.5


@dataclass
class Alarm:
    """The alarm's state over a run: `add` each evaluation; it returns the trip (a dict for summary.json) when a
    new episode of divergence begins, else None."""

    window: int
    drop: float
    metric: str  # the held-out metric's name in metrics.jsonl
    samples: int | None = None  # held-out samples per evaluation (prompts x num_samples), for the noise
    points: list[Point] = field(default_factory=list)
    active: bool = False
    trips: list[dict] = field(default_factory=list)

    def add(self, point: Point) -> dict | None:
        self.points.append(point)
        if self.active:
            # An episode lasts until the held-out metric is back near where it was when the episode began: a
            # window that merely stops qualifying (a noisy evaluation, a training reward that levelled) is the
            # same episode, not a new one.
            began = self.trips[-1]["held_out"][0]
            if point.held_out is not None and point.held_out >= began - self.drop:
                self.active = False
            return None
        if not diverging(self.points, self.window, self.drop, self.samples):
            return None
        self.active = True
        first = self.points[-self.window]
        trip = {
            "step": point.step,
            "since_step": first.step,
            "metric": self.metric,
            "held_out": [first.held_out, point.held_out],
            "train_reward": [first.train, point.train],
        }
        self.trips.append(trip)
        return trip

    def message(self, trip: dict) -> str:
        """The one warning line of a trip."""
        held, train = trip["held_out"], trip["train_reward"]
        return (
            f"reward hacking? at step {trip['step']} the held-out {trip['metric']} fell {held[0]:.3f} -> "
            f"{held[1]:.3f} since step {trip['since_step']} while the training reward rose {train[0]:.3f} -> "
            f"{train[1]:.3f} (eval.alarm_window {self.window}, eval.alarm_drop {self.drop})"
        )
