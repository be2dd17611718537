"""Calling tools and environments: every fault becomes an error the model reads and a count, never a dead run
(except a reset() whose on_error is fail)."""

from __future__ import annotations

import time

import pytest

from grpo_cli import tool_binding, tool_calls
from grpo_cli.recipe import EnvironmentEntry, ToolEntry
from tests.helpers import write

FAULTS = '''
import sys
import time


def raises(x: int) -> str:
    """Raise.

    Args:
        x: Anything.
    """
    raise KeyError(x)


def hangs(x: int) -> str:
    """Hang.

    Args:
        x: Anything.
    """
    time.sleep(60)


def exits(x: int) -> str:
    """Exit.

    Args:
        x: Anything.
    """
    sys.exit(3)


def returns_dict(x: int) -> dict:
    """A dict.

    Args:
        x: Anything.
    """
    return {"x": x}


def returns_megabytes(x: int) -> str:
    """Megabytes.

    Args:
        x: Anything.
    """
    return "a" * 3_000_000


def returns_number(x: int) -> int:
    """A number.

    Args:
        x: Anything.
    """
    return x * 2


class Flaky:
    """Reset fails on odd seeds."""

    def reset(self, seed: int = 0, **row) -> str:
        if seed % 2:
            raise ValueError(f"bad seed {seed}")
        self.total = 0
        return " (go)"

    def step(self, by: int) -> str:
        """Step.

        Args:
            by: How far.
        """
        self.total += by
        return str(self.total)

    def get_reward(self) -> float:
        return float(self.total)
'''


@pytest.fixture
def faults(tmp_path):
    return write(tmp_path / "faults.py", FAULTS)


def guarded(faults, name, timeout=30.0):
    tally = tool_calls.ToolTally()
    tool = tool_binding.bind_tool(ToolEntry(name=f"{faults}:{name}", timeout=timeout), "tools[0]")
    return tool_calls.guard_tool(tool, tally), tally


@pytest.mark.parametrize(
    "name, message",
    [
        ("raises", "raises raised KeyError: 1"),
        ("exits", "exits raised SystemExit: 3"),
        ("returns_dict", "returns_dict returned dict {'x': 1}, not text"),
        ("returns_megabytes", "returns_megabytes returned 3000000 characters, more than the 10000 allowed"),
    ],
)
def test_a_fault_is_a_tool_failure(faults, name, message):
    tool, tally = guarded(faults, name)
    assert tool_binding.tool_schema(tool)["function"]["name"] == name  # TRL reads the same schema
    with pytest.raises(tool_calls.ToolFailure) as info:
        tool(x=1)
    assert str(info.value) == message
    assert tally.take() == {f"tools/{name}/calls": 1.0, f"tools/{name}/failures": 1.0}
    assert tally.take() == {}


def test_a_hang_runs_over_its_timeout(faults):
    tool, tally = guarded(faults, "hangs", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(tool_calls.ToolFailure) as info:
        tool(x=1)
    assert time.monotonic() - started < 5
    assert str(info.value) == "tool 'hangs' ran over its timeout of 0.2 s"
    assert tally.failures == {"hangs": 1}


def test_a_number_is_text(faults):
    tool, tally = guarded(faults, "returns_number")
    assert tool(x=21) == "42"
    assert tally.take() == {"tools/returns_number/calls": 1.0, "tools/returns_number/failures": 0.0}


def environment(faults, on_error):
    tally = tool_calls.ToolTally()
    bound = tool_binding.bind_environment(
        EnvironmentEntry(name=f"{faults}:Flaky", on_error=on_error), "environment"
    )
    return tool_calls.guarded_environment(bound, tally), tally


def test_reset_failure_stops_the_run_under_fail(faults):
    factory, _tally = environment(faults, "fail")
    env = factory()
    assert type(env).__name__ == "Flaky"  # TRL names the environment's reward after its class
    assert env.reset(seed=2) == " (go)" and env.step(by=3) == "3" and env.get_reward() == 3.0
    with pytest.raises(tool_calls.EnvironmentError_) as info:
        env.reset(seed=1)
    assert str(info.value) == (
        f"environment ({faults}:Flaky): reset() raised ValueError: bad seed 1; row: {{'seed': 1}} (set on_error: "
        "zero or skip on the environment to go on without it)"
    )


@pytest.mark.parametrize("on_error, reward", [("zero", 0.0), ("skip", None)])
def test_reset_failure_under_zero_or_skip(faults, on_error, reward):
    factory, tally = environment(faults, on_error)
    env = factory()
    assert env.reset(seed=1) is None
    with pytest.raises(tool_calls.ToolFailure) as info:
        env.step(by=1)
    assert str(info.value) == "the environment is unusable: reset() raised ValueError: bad seed 1"
    assert env.get_reward() == reward
    assert tally.take() == {"tools/step/calls": 1.0, "tools/step/failures": 1.0, "tools/reset_failures": 1.0}
    env.reset(seed=0)  # the same instance, reset for the next rollout (TRL pools them), works again
    assert env.step(by=2) == "2"


def test_instances_are_isolated(faults):
    factory, _tally = environment(faults, "fail")
    one, two = factory(), factory()
    one.reset(), two.reset()
    one.step(by=5)
    assert two.step(by=1) == "1" and one.get_reward() == 5.0
