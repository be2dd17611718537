"""Accuracy that pays extra for shown reasoning: 2 for a reasoned correct answer, 1 for a bare one, 0 if wrong."""

import re

from ._text import Completion, completion_text
from .accuracy import find_answer, is_correct

__all__ = ["reasoned_accuracy_reward"]

# Two numbers joined by an arithmetic operator or an equals sign: "2 + 3", "12/4", "x = 3 * 4".
_ARITHMETIC_STEP = re.compile(r"\d\s*[-+*/×÷=^]\s*-?\.?\d")
_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"[^\W\d_]+")


def shows_reasoning(text: str, min_words: int = 5) -> bool:
    """Whether the text before the final answer shows reasoning.

    It does when, tags like `<think>` aside, it holds an arithmetic step (two numbers joined by `+ - * / × ÷ ^`
    or `=`) or at least `min_words` words, so a bare lead-in such as "The answer is" does not count.

    >>> from grpo_cli.builtin_rewards.reasoned_accuracy import shows_reasoning
    >>> shows_reasoning("2 + 3 = 5"), shows_reasoning("The answer is 5"), shows_reasoning("5")
    (True, False, False)
    >>> shows_reasoning("<think>She had two and bought three more.</think><answer>5</answer>")
    True
    """
    found = find_answer(text)
    before = _TAG.sub(" ", text[: found[1]] if found else text)
    return bool(_ARITHMETIC_STEP.search(before)) or len(_WORD.findall(before)) >= min_words


def reasoned_accuracy_reward(
    completions: list[Completion], answer_column: str = "answer", min_words: int = 5, **kwargs
) -> list[float | None]:
    """2.0 for a correct answer with reasoning shown before it, 1.0 for a bare correct answer, 0.0 if wrong.

    Correctness is `accuracy_reward`'s; reasoning is what `shows_reasoning` says (an arithmetic step, or at least
    `min_words` words, before the final answer). A completion whose reference is missing or empty gets None.

    >>> from grpo_cli.builtin_rewards.reasoned_accuracy import reasoned_accuracy_reward
    >>> reasoned_accuracy_reward(["5", "6", "2 + 3 = 5"], answer=["5", "5", "5"])
    [1.0, 0.0, 2.0]
    """
    rewards = []
    for completion, reference in zip(completions, kwargs[answer_column], strict=True):
        text = completion_text(completion)
        correct = is_correct(text, reference)
        if correct is None:
            rewards.append(None)
        elif not correct:
            rewards.append(0.0)
        else:
            rewards.append(2.0 if shows_reasoning(text, min_words) else 1.0)
    return rewards
