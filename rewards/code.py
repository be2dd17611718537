"""Running the completion's program against the row's tests in a local sandbox (`grpo_cli.sandbox`)."""

from grpo_cli import code_runner, output, sandbox

from ._text import Completion, completion_text

__all__ = ["code_reward"]


def code_reward(
    completions: list[Completion],
    tests_column: str = "tests",
    timeout: float = 5,
    memory_mb: int = 512,
    partial_credit: bool = True,
    language: str = "python",
    extract: str = "last_block",
    workers: int | None = None,
    log_extra=None,
    log_metric=None,
    **kwargs,
) -> list[float]:
    """The fraction of the row's tests the completion's program passes (1.0 or 0.0 with `partial_credit: false`).

    The program is the completion's last fenced code block (`extract`: `first_block`, or `whole` for the whole
    text); a completion without one scores 0. The tests (column `tests_column`) are a string of Python whose
    top-level asserts are the tests, or a list of `{input, output}` pairs (stdin, and stdout compared stripped).
    Each program runs in a sandbox: its own temporary directory, a cleared environment, no network where the
    platform allows, `timeout` seconds and `memory_mb` MB (docs/rewards.md says what is contained). Up to
    `workers` programs run at once (default: the cores training leaves free). Each completion's verdict
    (passed, failed, timeout, memory, crash, no_code) goes to TRL's completions table (`verdict`,
    `details`, logged as `code/verdict` and `code/details`) and the count of each per call to the metrics (`code/<verdict>`).

    >>> from grpo_cli.builtin_rewards.code import code_reward
    >>> done = "```python\\ndef add(a, b):\\n    return a + b\\n```"
    >>> code_reward([done, "def add(a, b): ..."], tests=["assert add(1, 2) == 3\\nassert add(0, 0) == 0"] * 2)
    [1.0, 0.0]
    """
    options = code_runner.Options(timeout, memory_mb, partial_credit, language, extract, workers)
    for warning in sandbox.isolation().warnings():  # said at validate and at the start of training
        output.warn_once(warning)
    if not completions:
        return []
    texts = [completion_text(c) for c in completions]
    results = code_runner.check_many(texts, list(kwargs[tests_column]), options)
    if log_extra is not None:
        log_extra("verdict", [r.verdict for r in results])
        log_extra("details", [r.details for r in results])
    if log_metric is not None:
        for verdict in code_runner.VERDICTS:
            log_metric(f"code/{verdict}", float(sum(r.verdict == verdict for r in results)))
    return [r.score for r in results]


def explain(completion: Completion, tests, **args) -> tuple[float, str, str]:
    """(score, verdict, details) for one completion and its row's tests, with the reward's `args`.

    >>> from grpo_cli.builtin_rewards.code import explain
    >>> explain("```python\\nprint(int(input()) * 2)\\n```", [{"input": "2", "output": "4"}, {"input": "3", "output": "7"}])
    (0.5, 'failed', "1/2 tests passed; test 2: input '3': expected '7', got '6'")
    """
    args = {k: v for k, v in args.items() if k != "tests_column"}
    result = code_runner.check(completion_text(completion), tests, code_runner.Options(**args))
    return result.score, result.verdict, result.details


# `rewards test` and eval ask a reward for why it scored what it did through this attribute.
code_reward.explain = explain
