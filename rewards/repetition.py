"""Penalty for repeated word n-grams, against degenerate, looping text."""

from ._text import Completion, completion_text

__all__ = ["repetition_reward"]


def repetition_reward(
    completions: list[Completion], ngram_size: int = 3, max_penalty: float = -1.0, **kwargs
) -> list[float]:
    """Penalise repeated n-grams: `(1 - unique / total n-grams) * max_penalty`, 0.0 when nothing repeats.

    The n-grams are over lower-cased whitespace-separated words, as in open-r1's `get_repetition_penalty_reward`
    (TRL's version counts token ids instead). Texts shorter than `ngram_size` words get 0.0. Bad arguments raise
    ValueError on the first call, before any completion is scored.

    >>> from grpo_cli.builtin_rewards.repetition import repetition_reward
    >>> repetition_reward(["the cat sat on the mat", "go go go go go", "hi"], ngram_size=2)
    [0.0, -0.75, 0.0]
    """
    if ngram_size < 1:
        raise ValueError(f"repetition_reward: `ngram_size` must be at least 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"repetition_reward: `max_penalty` must not be positive, got {max_penalty}")

    rewards = []
    for completion in completions:
        words = completion_text(completion).lower().split()
        ngrams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
        repeated = 1 - len(set(ngrams)) / len(ngrams) if ngrams else 0.0
        # `if repeated` avoids returning -0.0 when nothing repeats.
        rewards.append(repeated * max_penalty if repeated else 0.0)
    return rewards
