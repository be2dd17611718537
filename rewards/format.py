"""Structure of the completion: `<think>` reasoning then an `<answer>`, or any regex you give."""

import re
from functools import cache

from ._text import Completion, completion_text

__all__ = ["format_reward"]

# Tag contents may not open or close another think/answer tag, so a second <answer> block fails the format.
_BODY = r"(?:(?!</?(?:think|answer)>).)*"
_THINK_THEN_ANSWER = rf"\s*<think>{_BODY}</think>\s*<answer>{_BODY}</answer>\s*"


@cache
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as error:
        raise ValueError(
            f"format_reward: `pattern` {pattern!r} is not a valid regular expression: {error}"
        ) from None


def format_reward(completions: list[Completion], pattern: str | None = None, **kwargs) -> list[float]:
    """1.0 when the completion is `<think>...</think>` then `<answer>...</answer>` (or matches `pattern`), else 0.0.

    By default whitespace is allowed around the tags, but nothing else outside them, and each tag appears once.
    With `pattern`, a regular expression, the whole completion must match it instead (`.` also matches newlines).

    >>> from grpo_cli.builtin_rewards.format import format_reward
    >>> completions = [
    ...     "<think>\\n2 + 3 = 5\\n</think>\\n<answer>5</answer>\\n",
    ...     [{"role": "assistant", "content": "<answer>5</answer>"}],
    ...     "<think>2 + 3</think><answer>5</answer> and more",
    ... ]
    >>> format_reward(completions)
    [1.0, 0.0, 0.0]
    >>> format_reward(["Answer: 5", "5"], pattern=r"Answer: \\d+")
    [1.0, 0.0]
    """
    regex = _compile(_THINK_THEN_ANSWER if pattern is None else pattern)
    return [1.0 if regex.fullmatch(completion_text(c)) else 0.0 for c in completions]
