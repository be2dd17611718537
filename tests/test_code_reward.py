"""The `code` built-in reward: scores and verdicts, both test forms, its arguments at validate, what it logs,
`rewards test`, and (slow) a few GRPO steps trained with it."""

from __future__ import annotations

import json

import pytest
import yaml

from grpo_cli import code_runner, scoring
from grpo_cli.builtin_rewards.code import code_reward, explain

ADD = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "import math\nassert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert math.isclose(add(0.1, 0.2), 0.3)"


def block(code: str) -> str:
    return f"Sure:\n```python\n{code}\n```\nThat is all."


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (ADD, (1.0, "passed", "3/3 tests passed")),
        (
            block("def add(a, b):\n    return a + b + (a < 0)"),
            (2 / 3, "failed", "2/3 tests passed; test 2: assert add(-1, 1) == 0"),
        ),
        (
            block("def add(a, b):\n    return a + int(b)"),
            (2 / 3, "failed", "2/3 tests passed; test 3: assert math.isclose(add(0.1, 0.2), 0.3)"),
        ),
        (
            block("def add(a, b) return a"),
            (
                0.0,
                "crash",
                "0/3 tests passed; test 1: the program raised SyntaxError: expected ':' (solution.py, line 1)",
            ),
        ),
        ("def add(a, b): return a + b", (0.0, "no_code", "no code block found in the completion")),
        (
            block("import sys\nsys.exit(0)"),
            (0.0, "crash", "0/3 tests passed; test 1: the program raised SystemExit: 0"),
        ),
        (
            block("import os\nos._exit(0)"),
            (0.0, "crash", "0/3 tests passed; test 1: exited with code 0 before this test ran"),
        ),
    ],
)
def test_assert_tests_score_verdict_and_details(completion, expected):
    assert explain(completion, TESTS) == expected


def test_the_last_python_block_is_the_program_unless_told_otherwise():
    text = "```python\ndef add(a, b):\n    return 0\n```\nBetter:\n```\ndef add(a, b):\n    return a + b\n```\n```text\nx\n```"
    assert explain(text, TESTS)[:2] == (1.0, "passed")
    assert explain(text, TESTS, extract="first_block")[:2] == (1 / 3, "failed")
    assert explain("def add(a, b):\n    return a + b", TESTS, extract="whole")[:2] == (1.0, "passed")


def test_all_or_nothing():
    half = block("def add(a, b):\n    return a + b + (a < 0)")
    assert explain(half, TESTS, partial_credit=False)[:2] == (0.0, "failed")
    assert explain(ADD, TESTS, partial_credit=False)[:2] == (1.0, "passed")


def test_stdin_stdout_pairs_are_compared_stripped():
    tests = [
        {"input": "2 3\n", "output": "5"},
        {"input": "10 -4", "output": " 6 \n"},
        {"input": "1 1", "output": "3"},
    ]
    program = block("a, b = map(int, input().split())\nprint(a + b)")
    assert explain(program, tests) == (
        2 / 3,
        "failed",
        "2/3 tests passed; test 3: input '1 1': expected '3', got '2'",
    )
    crashing = block("print(int(input()) // 0)")
    assert explain(crashing, [{"input": "1", "output": "1"}]) == (
        0.0,
        "crash",
        "0/1 tests passed; test 1: input '1': ZeroDivisionError: integer division or modulo by zero",
    )
    hungry = block("x = bytearray(2 * 1024**3)")
    assert explain(hungry, [{"input": "", "output": ""}])[:2] == (0.0, "memory")


def test_a_list_of_assert_strings_as_mbpp_test_list():
    assert explain(ADD, ["assert add(1, 2) == 3", "assert add(2, 2) == 5"]) == (
        0.5,
        "failed",
        "1/2 tests passed; test 2: assert add(2, 2) == 5",
    )


def test_a_batch_runs_in_parallel_and_keeps_its_order():
    slow = block("import time\ntime.sleep(0.5)\ndef add(a, b):\n    return a + b")
    texts = [slow] * 4 + ["no code"]
    results = code_runner.check_many(texts, [TESTS] * 5, code_runner.Options(workers=4))
    assert [r.verdict for r in results] == ["passed"] * 4 + ["no_code"]


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ("add(1, 2)", "the test code has no top-level assert statement"),
        ("assert (", "the tests are not valid Python"),
        ([{"input": "1"}], "a stdin/stdout test needs `input` and `output` keys"),
        (3, "tests must be a string of Python assert statements"),
    ],
)
def test_tests_in_no_known_form_are_the_dataset_s_error(tests, message):
    with pytest.raises(ValueError, match=message):
        code_reward([ADD], tests=[tests])


def test_verdicts_go_to_log_extra_and_counts_to_log_metric():
    log = scoring.RewardLog()
    completions = [ADD, "no code", block("while True:\n    pass")]
    scores = code_reward(
        completions, tests=[TESTS] * 3, timeout=1, log_extra=log.log_extra, log_metric=log.log_metric
    )
    assert scores == [1.0, 0.0, 0.0]
    extra = log.take_extra(3)
    assert extra["verdict"] == ["passed", "no_code", "timeout"]
    assert extra["details"][0] == "3/3 tests passed"
    assert log.take_metrics() == {
        "code/passed": 1.0,
        "code/failed": 0.0,
        "code/timeout": 1.0,
        "code/memory": 0.0,
        "code/crash": 0.0,
        "code/no_code": 1.0,
    }


def code_recipe(tmp_path, tiny_recipe, reward: dict, rows: list[dict] | None = None):
    rows = rows or [{"question": "add", "tests": TESTS}, {"question": "add again", "tests": TESTS}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    changes = {
        "dataset": {"generate": None, "source": "tasks.jsonl", "eval_size": None, "prompt": "{question}"},
        "rewards": [reward],
    }
    from grpo_cli.recipe_files import deep_merge
    from tests.helpers import TINY_RECIPE

    return tiny_recipe(deep_merge(TINY_RECIPE, changes))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"timeout": 0}, "`timeout` must be seconds in (0, 600], got 0"),
        ({"memory_mb": 8}, "`memory_mb` must be a whole number of MB, at least 32, got 8"),
        ({"language": "cobol"}, "`language` 'cobol' is not supported; supported: python"),
        ({"partial_credit": "yes"}, "`partial_credit` must be true or false, got 'yes'"),
        ({"tests_column": "cases"}, "cases"),
    ],
)
def test_validate_rejects_bad_args_and_a_missing_tests_column(cli, tmp_path, tiny_recipe, args, message):
    result = cli("validate", code_recipe(tmp_path, tiny_recipe, {"name": "code", "args": args}))
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_validate_accepts_the_reward(cli, tmp_path, tiny_recipe):
    result = cli("validate", code_recipe(tmp_path, tiny_recipe, {"name": "code", "args": {"timeout": 2}}))
    assert result.exit_code == 0, result.output


def test_rewards_test_shows_each_verdict(cli):
    half = block("def add(a, b):\n    return a + b + (a < 0)")
    result = cli(
        "rewards", "test", "-r", "code", "--column", f"tests={TESTS}", "-c", ADD, "-c", half, "-c", "nothing"
    )
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    for shown in ("passed", "failed", "no_code", "2/3 tests passed"):
        assert shown in out


@pytest.mark.slow
def test_grpo_trains_a_few_steps_with_the_code_reward(tmp_path, one_torch_thread):
    """A tiny model that can only write `print(...)` programs of digits and `+`: its completions are the whole
    program (`extract: whole`), checked against stdout; the verdict counts reach metrics.jsonl."""
    from typer.testing import CliRunner

    from grpo_cli.cli import app
    from tests.helpers import TINY_RECIPE

    rows = [
        {"question": f"{a}+{b}", "tests": [{"input": "", "output": str(a + b)}]}
        for a in range(4)
        for b in range(4)
    ]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        **TINY_RECIPE,
        "output_dir": str(tmp_path / "run"),
        "model": {"from_config": {**TINY_RECIPE["model"]["from_config"], "vocabulary": "print()0123456789+"}},
        "dataset": {"source": str(tmp_path / "tasks.jsonl"), "prompt": "{question}"},
        "rewards": [{"name": "code", "args": {"extract": "whole", "timeout": 2, "workers": 2}}],
        "trainer": {**TINY_RECIPE["trainer"], "max_steps": 2, "max_completion_length": 8, "save_steps": 2},
    }
    path = tmp_path / "code.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output + str(result.exception)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "rewards/code" in r]
    assert len(steps) == 2
    for row in steps:  # each call scored one batch of 8 completions, every one with exactly one verdict
        assert sum(row[f"code/{v}"] for v in code_runner.VERDICTS) == 8
        assert 0.0 <= row["rewards/code"] <= 1.0
