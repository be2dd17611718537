"""Partial credit for numeric answers: the closer the final number to the reference, the higher the score."""

from decimal import Decimal, InvalidOperation

from ._text import Completion, completion_text
from .accuracy import extract_answer, normalize_answer, reference_answer

__all__ = ["closeness_reward"]


def _number(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(normalize_answer(text))
    except InvalidOperation:
        return None


def closeness_reward(
    completions: list[Completion], answer_column: str = "answer", scale: float = 10.0, **kwargs
) -> list[float | None]:
    """max(0, 1 - |answer - reference| / scale): a dense signal that an exact-match reward lacks early on.

    A completion with no numeric answer scores 0.0; a missing or non-numeric reference gives None.

    >>> from grpo_cli.builtin_rewards.closeness import closeness_reward
    >>> closeness_reward(["7", "9", "no idea", "#### 27"], answer=["7", "7", "7", "7"])
    [1.0, 0.8, 0.0, 0.0]
    """
    if scale <= 0:
        raise ValueError(f"closeness: scale must be > 0, got {scale}")
    results = []
    for completion, reference in zip(completions, kwargs[answer_column], strict=True):
        expected = _number(reference_answer(reference))
        if expected is None:
            results.append(None)
            continue
        answer = _number(extract_answer(completion_text(completion)))
        if answer is None:
            results.append(0.0)
        else:
            results.append(max(0.0, 1.0 - float(abs(answer - expected)) / scale))
    return results
