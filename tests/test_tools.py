"""Tools and environments: names, binding, and every refusal `validate` makes before a model loads.

Calling them (timeouts, errors reported to the model) is tested in test_tool_calls.py; the loop in
test_tool_loop.py.
"""

from __future__ import annotations

import json

import pytest

from grpo_cli import tool_binding
from grpo_cli.builtin_tools.calculator import calculator
from grpo_cli.errors import UserError
from grpo_cli.recipe import ToolEntry
from tests.helpers import write

CALC = '''
class Counter:
    """Counts."""

    def __init__(self, start: int = 0):
        self.start = start

    def reset(self, **row) -> None:
        self.n = self.start

    def bump(self, by: int) -> str:
        """Bump the counter.

        Args:
            by: How much.
        """
        self.n += by
        return str(self.n)

    def get_reward(self) -> float:
        return float(self.n)


class NoReset:
    def bump(self, by: int) -> str:
        """Bump.

        Args:
            by: How much.
        """
        return "x"


class NoReward:
    def reset(self, **row) -> None:
        pass


def add(a: int, b: int, scale: int = 1) -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
        scale: A factor the recipe sets.
    """
    return (a + b) * scale


def nohints(a, b):
    """No hints.

    Args:
        a: x
        b: y
    """
    return a


def nodoc(a: int) -> int:
    return a
'''


@pytest.fixture
def tools_file(tmp_path):
    return write(tmp_path / "calc.py", CALC)


def problems(cli, path) -> list[str]:
    result = cli("validate", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    if len(lines) == 1:  # one problem: "error: tiny.yaml: <problem>"
        return [lines[0].split(": ", 2)[2]]
    return [line.removeprefix("  - ") for line in lines[1:]]


def test_calculator_is_arithmetic_only():
    assert calculator("12345 + 67890") == "80235"
    assert calculator("(2 + 3) * 4 / 2") == "10"
    assert calculator("-7 // 2") == "-4"
    for bad, error in [
        ("__import__('os')", "not arithmetic: \"__import__('os')\" (numbers and + - * / // % ** only)"),
        ("9 ** 9 ** 9", "exponent 387420489 is too large (at most 100)"),
        ("1 +", "cannot parse '1 +': invalid syntax"),
    ]:
        with pytest.raises(ValueError) as info:
            calculator(bad)
        assert str(info.value) == error


def test_bound_args_vanish_from_the_schema(tools_file):
    tool = tool_binding.bind_tool(ToolEntry(name=f"{tools_file}:add", args={"scale": 10}), "tools[0]")
    schema = tool_binding.tool_schema(tool.fn)
    assert tool.name == "add"
    assert schema["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first."},
            "b": {"type": "integer", "description": "The second."},
        },
        "required": ["a", "b"],
    }
    assert tool.fn(a=1, b=2) == 30


def test_bind_refusals(tools_file):
    def error(name, **args):
        with pytest.raises(UserError) as info:
            tool_binding.bind_tool(ToolEntry(name=name, args=args), "tools[0]")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert error(f"{tools_file}:add", factor=2) == (
        f"tools[0] ({tools_file}:add): unknown argument 'factor'; its arguments: a, b, scale=1"
    )
    assert error(f"{tools_file}:Counter") == (
        f"tools[0] ({tools_file}:Counter): <class 'grpo_cli_user_tools.calc_"
        + error(f"{tools_file}:Counter").split("grpo_cli_user_tools.calc_")[1].split("'")[0]
        + "'> is not a function; a tool is a function with type hints and a docstring (several tools sharing "
        "state belong in an environment's methods)"
    )
    assert error("calculater").startswith("tools[0]: unknown tool 'calculater' (did you mean 'calculator'?)")


def test_validate_lists_every_tool_problem(cli, tiny_recipe, tools_file):
    path = tiny_recipe(
        {
            "tools": [
                {"name": "./calc.py:add"},
                {"name": "./calc.py:nohints"},
                {"name": "./calc.py:nodoc"},
                {"name": "calculater"},
            ],
            "environment": {"first": {"name": "./calc.py:NoReset"}, "second": {"name": "./calc.py:Counter"}},
        }
    )
    hint = "a tool needs a type hint on every argument and a docstring with an `Args:` line for each (Google style)"
    assert problems(cli, path) == [
        f"tools[1] ({tools_file}:nohints): transformers cannot describe it to the model (TypeHintParsingException: "
        f"Argument a is missing a type hint in function nohints); {hint}",
        f"tools[2] ({tools_file}:nodoc): transformers cannot describe it to the model (DocstringParsingException: "
        f"Cannot generate JSON schema for nodoc because it has no docstring!); {hint}",
        "tools[3]: unknown tool 'calculater' (did you mean 'calculator'?); looked in the built-ins "
        "(grpo_cli/builtin_tools) and the installed plugins (entry-point group 'grpo_cli.tools'); other names are "
        "path/to/file.py:function or package.module:function. Available: calculator (see `grpo-cli tools ls`)",
        f"environment.first ({tools_file}:NoReset): an environment needs a reset(self, **row) method (it is called "
        "before each rollout with the dataset row; return None or text to append to the prompt)",
        "environment: a mapping of environments (second) needs a dataset column 'environment' naming each row's; "
        "columns: question, answer",
    ]


@pytest.mark.parametrize("algorithm", ["ppo", "sft", "reward"])
def test_tools_need_grpo(cli, tiny_recipe, algorithm):
    path = tiny_recipe(
        {"algorithm": algorithm, "trainer": None, "rewards": [], "tools": [{"name": "calculator"}]}
    )
    line = (
        f"tools: {algorithm} training has no tool loop (TRL runs tools only in GRPO); use algorithm: grpo, "
        "or remove `tools:`"
    )
    assert line in problems(cli, path)


def test_reward_may_be_absent_only_when_the_environment_scores(cli, tiny_recipe, tools_file):
    scored = tiny_recipe({"rewards": [], "environment": {"name": "./calc.py:Counter", "args": {"start": 2}}})
    assert cli("validate", scored).exit_code == 0
    unscored = tiny_recipe({"rewards": [], "environment": {"name": "./calc.py:NoReward"}})
    assert problems(cli, unscored) == [
        f"rewards: none given, and environment ({tools_file}:NoReward) has no get_reward() method; add a reward, "
        "or give the environment get_reward(self) -> float"
    ]
    bad_args = tiny_recipe({"environment": {"name": "./calc.py:Counter", "args": {"stat": 2}}})
    assert problems(cli, bad_args) == [
        f"environment ({tools_file}:Counter): unknown argument 'stat' (did you mean 'start'?); its arguments: start=0"
    ]


def test_same_name_twice_is_refused(cli, tiny_recipe, tools_file):
    path = tiny_recipe({"tools": [{"name": "calculator"}, {"name": "calculator"}]})
    assert problems(cli, path) == ["tools: calculator listed twice; the model calls tools by name"]


def test_tool_template_must_be_known(cli, tiny_recipe):
    path = tiny_recipe({"tools": [{"name": "calculator"}], "tool_template": "qwen9"})
    (line,) = problems(cli, path)
    assert line.startswith("tool_template: Input should be 'qwen2_5', 'qwen3',")


def test_tools_ls_shows_the_schema(cli):
    result = cli("tools", "ls", "--show")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("tools:\n  calculator  built-in\n      Evaluate an arithmetic expression")
    start = result.stdout.index("      {")
    end = result.stdout.index("\n      }\n") + len("\n      }")
    assert json.loads(result.stdout[start:end]) == tool_binding.tool_schema(calculator)
    assert "environments: none installed" in result.stdout
