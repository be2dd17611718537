"""Length shaping in characters: aim at a target length, or softly penalise running long."""

from ._text import Completion, completion_text

__all__ = ["length_reward"]


def length_reward(
    completions: list[Completion],
    target: int | None = None,
    max_length: int | None = None,
    soft_fraction: float = 0.8,
    **kwargs,
) -> list[float]:
    """Reward a completion's length in characters: closeness to `target`, or a soft penalty near `max_length`.

    Give exactly one of the two:

    - `target`: `1 - |length - target| / target`, floored at 0 (1.0 on target, 0.0 at twice the target or empty).
    - `max_length`: 0.0 up to `soft_fraction * max_length` (80% by default), then falling linearly to -1.0 at
      `max_length`, and -1.0 beyond (like DAPO's soft overlong punishment, but in characters).

    Bad arguments raise ValueError on the first call, before any completion is scored, so calling the bound
    reward with an empty list checks them.

    >>> from grpo_cli.builtin_rewards.length import length_reward
    >>> length_reward(["x" * 10, "x" * 15, "x" * 30], target=10)
    [1.0, 0.5, 0.0]
    >>> length_reward(["x" * 80, "x" * 90, "x" * 120], max_length=100)
    [0.0, -0.5, -1.0]
    """
    if (target is None) == (max_length is None):
        raise ValueError(
            "length_reward needs exactly one of `target` (reward closeness to this many characters) "
            f"or `max_length` (penalise approaching this many characters); got target={target}, "
            f"max_length={max_length}"
        )
    if target is not None and target <= 0:
        raise ValueError(f"length_reward: `target` must be a positive number of characters, got {target}")
    if max_length is not None and max_length <= 0:
        raise ValueError(
            f"length_reward: `max_length` must be a positive number of characters, got {max_length}"
        )
    if not 0 <= soft_fraction < 1:
        raise ValueError(f"length_reward: `soft_fraction` must be in [0, 1), got {soft_fraction}")

    lengths = [len(completion_text(c)) for c in completions]
    if target is not None:
        return [max(0.0, 1 - abs(length - target) / target) for length in lengths]
    soft_start = soft_fraction * max_length
    return [max(-1.0, min(0.0, (soft_start - length) / (max_length - soft_start))) for length in lengths]
