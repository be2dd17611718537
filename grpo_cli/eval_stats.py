"""Evaluation statistics over scored completions: pass@k, one model's summary, the difference of two.

Pure arithmetic on `generation.Sample`s (anything with `scores`, `total`, `length` and `clipped`): no model,
no file, so every number `eval` reports can be checked by hand.
"""

from __future__ import annotations

import math
import statistics
from typing import Protocol


class Sample(Protocol):
    """What a scored completion gives these statistics (`generation.Sample` is one)."""

    @property
    def scores(self) -> dict[str, float | None]: ...
    @property
    def total(self) -> float | None: ...
    @property
    def length(self) -> int: ...
    @property
    def clipped(self) -> bool: ...


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from `n` samples of which `c` passed (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), the chance that k of the n drawn without
    replacement include a pass.

    >>> pass_at_k(5, 2, 1), pass_at_k(5, 2, 2), pass_at_k(5, 0, 3), pass_at_k(5, 4, 2)
    (0.4, 0.7, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def is_pass_fail(scores: list[float | None]) -> bool:
    values = [s for s in scores if s is not None]
    return bool(values) and all(s in (0.0, 1.0) for s in values)


def summarize(
    samples: list[list[Sample]], reward_names: list[str], *, with_total: bool
) -> dict[str, float | None]:
    """Metrics over `samples[prompt][sample]`, named as in metrics.jsonl (`reward`, `rewards/<name>`, ...).

    Means and (population) standard deviations skip None scores. A reward whose scores are all 0 or 1 is pass/fail
    and also gets pass@1 and pass@K (K = samples per prompt), averaged over the prompts it scored at least k times.
    """
    flat = [s for group in samples for s in group]
    metrics: dict[str, float | None] = {}
    if with_total:
        metrics["reward"], metrics["reward_std"] = _mean_std([s.total for s in flat])
    num_samples = max((len(group) for group in samples), default=0)
    for name in reward_names:
        key = f"rewards/{name}"
        metrics[key], metrics[f"{key}/std"] = _mean_std([s.scores.get(name) for s in flat])
        if not is_pass_fail([s.scores.get(name) for s in flat]):
            continue
        for k in sorted({1, num_samples}):
            estimates = []
            for group in samples:
                scored = [s.scores[name] for s in group if s.scores.get(name) is not None]
                if len(scored) >= k:
                    estimates.append(pass_at_k(len(scored), int(sum(scored)), k))
            metrics[f"{key}/pass@{k}"] = sum(estimates) / len(estimates) if estimates else None
    metrics["completion_length"] = _mean_std([s.length for s in flat])[0]
    metrics["clipped_ratio"] = _mean_std([float(s.clipped) for s in flat])[0]
    return metrics


def _mean_std(values) -> tuple[float | None, float | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.pstdev(present)


def difference(tuned: dict[str, float | None], base: dict[str, float | None]) -> dict[str, float | None]:
    """tuned - base for every metric both have."""
    return {
        key: None if tuned[key] is None or base.get(key) is None else tuned[key] - base[key]
        for key in tuned
        if key in base
    }
