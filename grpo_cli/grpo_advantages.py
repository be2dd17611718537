"""GRPO's group-relative advantages, computed as TRL 1.12's GRPOTrainer computes them (what `rewards test` shows)."""

from __future__ import annotations

import math

from grpo_cli.errors import UserError


def _std(values: list[float | None]) -> float:
    """The unbiased standard deviation of the values that are not None, NaN for fewer than two (TRL's nanstd)."""
    valid = [v for v in values if v is not None]
    if len(valid) < 2:
        return math.nan
    mean = sum(valid) / len(valid)
    return (sum((v - mean) ** 2 for v in valid) / (len(valid) - 1)) ** 0.5


def _mean(values: list[float | None]) -> float:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else math.nan


def _normalise(values: list[float | None], mean: float, std: float | None) -> list[float | None]:
    """(v - mean) / (std + 1e-4), or v - mean when std is None; None stays None."""
    if std is None:
        return [None if v is None else v - mean for v in values]
    return [None if v is None else (v - mean) / (std + 1e-4) for v in values]  # NaN when std is NaN


def advantages(
    tables: list[list[list[float | None]]],
    weights: list[float],
    scale: str = "group",
    aggregation: str = "sum_then_normalize",
) -> list[list[float]]:
    """GRPO's advantage of every completion, computed as TRL 1.12's GRPOTrainer does.

    `tables[g][k][i]` is reward k's score of completion i in group g (the completions of one prompt), None where
    the reward does not apply. `scale` is the recipe's `trainer.scale_rewards`: "group" divides by the group's
    std, "batch" by the std over all groups, "none" not at all (std unbiased, plus 1e-4). A completion that every
    reward gave None is left out of its group's statistics and gets 0, as does anything divided by the std of
    fewer than two values.

    The README's worked example: rewards 1, 0, 2 in one group have mean 1, so unscaled advantages 0, -1, +1.

    >>> advantages([[[1.0, 0.0, 2.0]]], [1.0], "none")
    [[0.0, -1.0, 1.0]]
    """

    def weighted(scores) -> float | None:  # TRL's nansum over the rewards; None when no reward applies
        valid = [(w, s) for w, s in zip(weights, scores, strict=True) if s is not None and not math.isnan(s)]
        return sum(w * s for w, s in valid) if valid else None

    unscorable = [[all(s is None for s in column) for column in zip(*table, strict=True)] for table in tables]
    if aggregation == "sum_then_normalize":
        totals = [[weighted(column) for column in zip(*table, strict=True)] for table in tables]
        batch_std = _std([t for group in totals for t in group])
        result = []
        for group in totals:
            std = {"group": _std(group), "batch": batch_std, "none": None}[scale]
            result.append(_normalise(group, _mean(group), std))
    elif aggregation == "normalize_then_sum":
        # Each reward normalised within its group, then weighted and summed, then the sums over the whole batch.
        totals = []
        for table, skip in zip(tables, unscorable, strict=True):
            normalised = [_normalise(scores, _mean(scores), _std(scores)) for scores in table]
            sums = [weighted(column) for column in zip(*normalised, strict=True)]
            totals.append([None if s else (t or 0.0) for t, s in zip(sums, skip, strict=True)])
        everything = [t for group in totals for t in group]
        result = [_normalise(group, _mean(everything), _std(everything)) for group in totals]
    else:
        raise UserError(
            f"trainer.multi_objective_aggregation: {aggregation!r} is not sum_then_normalize or normalize_then_sum"
        )
    return [[0.0 if a is None or math.isnan(a) else a for a in group] for group in result]


def scale_mode(value) -> str:
    """A recipe's trainer.scale_rewards as TRL reads it (True and False are its older spellings)."""
    mode = {True: "group", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if mode not in ("group", "batch", "none"):
        raise UserError(f"trainer.scale_rewards: {value!r} is not group, batch or none")
    return mode
