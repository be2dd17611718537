"""Per-character credit for an exact answer: the share of the reference's characters written in place."""

from ._text import Completion, completion_text
from .accuracy import reference_answer

__all__ = ["digits_reward"]


def digits_reward(
    completions: list[Completion], answer_column: str = "answer", **kwargs
) -> list[float | None]:
    """Characters matching the reference in place, divided by the longer of the two lengths (1.0 only if exact).

    The completion is compared as written (surrounding whitespace aside), character by character from the left,
    so every right digit earns credit and every missing or extra character costs it: unlike `closeness`, guessing
    a number near the middle of the range earns nothing. A missing or empty reference gives None.

    >>> from grpo_cli.builtin_rewards.digits import digits_reward
    >>> digits_reward(["12", "13", "1", "123", "21", ""], answer=["12", "12", "12", "12", "12", "12"])
    [1.0, 0.5, 0.5, 0.6666666666666666, 0.0, 0.0]
    """
    results = []
    for completion, reference in zip(completions, kwargs[answer_column], strict=True):
        expected = reference_answer(reference)
        if expected is None:
            results.append(None)
            continue
        text = completion_text(completion).strip()
        matches = sum(a == b for a, b in zip(text, expected, strict=False))
        results.append(matches / max(len(text), len(expected)))
    return results
