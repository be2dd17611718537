"""Datasets generated in code (`dataset.generate`): the tasks, their options' checks, their sizes."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grpo_cli.errors import did_you_mean

if TYPE_CHECKING:
    from grpo_cli.recipe import GenerateSection


MAX_OPERAND = 10**9  # operands are written out in prompts: beyond this nothing learns them
_ENUMERATE_UP_TO = 100_000  # problems; more than this are sampled instead of listed


def addition_task(
    size: int, seed: int, min_operand: int = 0, max_operand: int = 9, max_sum: int | None = None
) -> list[dict]:
    """Distinct problems `a+b=` with the sum in the `answer` column, shuffled with `seed`.

    At most `size` rows; fewer when there are fewer distinct problems ((max - min + 1) ** 2, less those whose sum
    exceeds `max_sum` when it is given). Large ranges are sampled without listing every pair, so any range is fast.
    """
    problems = check_addition(min_operand=min_operand, max_operand=max_operand, max_sum=max_sum)
    if problems:
        raise ValueError("; ".join(problems))
    total = addition_count(min_operand, max_operand, max_sum)
    rng = random.Random(seed)
    if total <= _ENUMERATE_UP_TO:
        # In the order of all pairs a-major, filtered by max_sum: the ranges stop where the sums would exceed it.
        top = max_operand if max_sum is None else min(max_operand, max_sum - min_operand)
        pairs = [
            (a, b)
            for a in range(min_operand, top + 1)
            for b in range(
                min_operand, (max_operand if max_sum is None else min(max_operand, max_sum - a)) + 1
            )
        ]
        rng.shuffle(pairs)
        pairs = pairs[:size]
    else:  # distinct pairs drawn at random: at least half of any draw is a valid pair (see addition_count)
        top = max_operand if max_sum is None else min(max_operand, max_sum - min_operand)
        chosen: dict[tuple[int, int], None] = {}
        while len(chosen) < min(size, total):
            a, b = rng.randint(min_operand, top), rng.randint(min_operand, max_operand)
            if max_sum is None or a + b <= max_sum:
                chosen.setdefault((a, b))
        pairs = list(chosen)
    return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]


def addition_count(min_operand: int, max_operand: int, max_sum: int | None) -> int:
    """How many distinct problems the addition task has."""
    width = max_operand - min_operand + 1
    if max_sum is None or max_sum >= 2 * max_operand:
        return width * width
    # For each a, b runs from min_operand to min(max_operand, max_sum - a): a sum of arithmetic runs.
    total = 0
    for a in range(min_operand, min(max_operand, max_sum - min_operand) + 1):
        total += min(max_operand, max_sum - a) - min_operand + 1
    return total


def check_addition(**options: Any) -> list[str]:
    """What is wrong with the addition task's options (their names are checked by `check_task`)."""
    problems = []
    for name in ("min_operand", "max_operand", "max_sum"):
        value = options.get(name)
        if value is None and name == "max_sum":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be a whole number, got {value!r}")
        elif not 0 <= value <= MAX_OPERAND:
            problems.append(f"{name} must be between 0 and {MAX_OPERAND}, got {value}")
    if problems:
        return problems
    low, high, max_sum = options["min_operand"], options["max_operand"], options.get("max_sum")
    if high < low:
        problems.append(f"max_operand ({high}) is below min_operand ({low})")
    elif max_sum is not None and max_sum < 2 * low:
        problems.append(f"max_sum ({max_sum}) is below the smallest sum, {low}+{low}: no problem is left")
    elif max_sum is not None and min(high, max_sum - low) - low > 10 * _ENUMERATE_UP_TO:
        problems.append(
            f"max_sum ({max_sum}) with operands up to {high}: use max_operand to bound the problems"
        )
    return problems


NEAR_MISSES = (-10, -3, -2, -1, 1, 2, 3, 10)  # the mistakes a model that half knows addition makes


def addition_preferences_task(
    size: int,
    seed: int,
    min_operand: int = 0,
    max_operand: int = 9,
    max_sum: int | None = None,
    pairs_per_problem: int = 1,
) -> list[dict]:
    """The addition task's problems as preference pairs for a reward model: `chosen` the sum, `rejected` a wrong
    answer near it (off by 1 to 3, or by 10). `size` counts problems, in the addition task's order; each gets
    `pairs_per_problem` rows with distinct wrong answers (fewer where a sum has fewer non-negative near misses).
    The rows of one problem share its prompt, so a held-out split keeps them together (see `load_splits`)."""
    problems = addition_task(size, seed, min_operand, max_operand, max_sum)
    rng = random.Random(seed + 1)
    rows = []
    for problem in problems:
        right = int(problem["answer"])
        wrongs = [right + d for d in NEAR_MISSES if right + d >= 0]
        for wrong in rng.sample(wrongs, min(pairs_per_problem, len(wrongs))):
            rows.append({**problem, "chosen": str(right), "rejected": str(wrong)})
    return rows


def check_addition_preferences(pairs_per_problem: Any = 1, **options: Any) -> list[str]:
    problems = check_addition(**options)
    if isinstance(pairs_per_problem, bool) or not isinstance(pairs_per_problem, int):
        problems.append(f"pairs_per_problem must be a whole number, got {pairs_per_problem!r}")
    elif not 1 <= pairs_per_problem <= len(NEAR_MISSES):
        problems.append(
            f"pairs_per_problem must be between 1 and {len(NEAR_MISSES)}, got {pairs_per_problem}"
        )
    return problems


def addition_tool_calls_task(
    size: int, seed: int, min_operand: int = 0, max_operand: int = 9, max_sum: int | None = None
) -> list[dict]:
    """The addition task's problems as SFT transcripts that use the built-in `calculator` tool, two rows each (one
    per assistant turn, so SFT learns both): the call (`messages`: the question, then the assistant's call), and
    the answer (the question, the call, the tool's result, then the assistant's answer). A `tools` column holds
    the calculator's schema (JSON) for the chat template; `question` and `answer` are the addition task's, so a
    recipe with `prompt: "{question}"` holds out the same problems as one on the addition task."""
    import json

    from grpo_cli.builtin_tools.calculator import calculator
    from grpo_cli.tool_binding import tool_schema

    tools = json.dumps([tool_schema(calculator)])
    rows = []
    for problem in addition_task(size, seed, min_operand, max_operand, max_sum):
        question, answer = problem["question"], problem["answer"]
        call = {"name": "calculator", "arguments": {"expression": question.rstrip("=")}}
        asked = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]},
        ]
        answered = [*asked, {"role": "tool", "name": "calculator", "content": answer}]
        answered.append({"role": "assistant", "content": answer})
        rows.append({**problem, "messages": asked, "tools": tools})
        rows.append({**problem, "messages": answered, "tools": tools})
    return rows


TASKS: dict[str, Callable[..., list[dict]]] = {
    "addition": addition_task,
    "addition_preferences": addition_preferences_task,
    "addition_tool_calls": addition_tool_calls_task,
}
TASK_CHECKS: dict[str, Callable[..., list[str]]] = {
    "addition": check_addition,
    "addition_preferences": check_addition_preferences,
    "addition_tool_calls": check_addition,
}


def check_task(spec: GenerateSection) -> list[str]:
    """Every problem with a generated dataset's task and options, each naming its recipe key."""
    if spec.task not in TASKS:
        return [f"dataset.generate.task: unknown task {spec.task!r}; available: {', '.join(TASKS)}"]
    task = TASKS[spec.task]
    parameters = {
        name: p for name, p in inspect.signature(task).parameters.items() if name not in ("size", "seed")
    }
    problems = []
    for key in spec.options:
        if key not in parameters:
            problems.append(
                f"dataset.generate.options.{key}: not an option of the {spec.task} task"
                f"{did_you_mean(str(key), parameters)}; its options: "
                + ", ".join(f"{n}={p.default!r}" for n, p in parameters.items())
            )
    if problems:
        return problems
    given = {n: spec.options.get(n, p.default) for n, p in parameters.items()}
    return [f"dataset.generate.options: {problem}" for problem in TASK_CHECKS[spec.task](**given)]


def task_prompts(spec: GenerateSection) -> int:
    """How many distinct prompts (problems) a (checked) generated dataset has; `eval_size` counts these."""
    options = {"min_operand": 0, "max_operand": 9, "max_sum": None, **spec.options}
    return min(spec.size, addition_count(options["min_operand"], options["max_operand"], options["max_sum"]))
