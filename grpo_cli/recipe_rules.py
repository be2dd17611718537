"""What a recipe's algorithm allows, checked with the schema: tools only where the algorithm has a tool loop,
rewards exactly where it learns from them (the algorithm table says which)."""

from __future__ import annotations

from typing import Any

from grpo_cli.algorithms.table import ALGORITHMS


def algorithm_problems(recipe: Any, data: dict, *, rewards_read: bool) -> list[str]:
    """The problems of a recipe whose `algorithm` was read (`rewards_read`: its rewards were too)."""
    problems = _tool_problems(recipe, data)
    if not rewards_read:
        return problems
    learns = ALGORITHMS[recipe.algorithm].learns_from
    # An environment may own the reward (`get_reward`): validation checks that it does.
    if learns == "rewards" and not recipe.rewards and not recipe.environment:
        problems.append(
            f"rewards: {recipe.algorithm.upper()} needs at least one reward (see `grpo-cli rewards ls`)"
        )
    elif learns != "rewards" and recipe.rewards:
        problems.append(
            f"rewards: {recipe.algorithm} training learns from {learns}, not rewards; remove `rewards:` "
            "(eval-only metrics go in eval.rewards)"
        )
    return problems


def _tool_problems(recipe: Any, data: dict) -> list[str]:
    """Tools and environments only where the algorithm has a tool loop."""
    used = [key for key in ("tools", "environment", "tool_template") if data.get(key)]
    if not used or ALGORITHMS[recipe.algorithm].supports_tools:
        return []
    with_tools = ", ".join(a.name for a in ALGORITHMS.values() if a.supports_tools)
    return [
        f"{used[0]}: {recipe.algorithm} training has no tool loop (TRL runs tools only in GRPO); "
        f"use algorithm: {with_tools}, or remove `{used[0]}:`"
    ]
