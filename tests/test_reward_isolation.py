"""`isolation: process` (grpo_cli.reward_workers): the same scores, a timeout that kills, crashes that cost one call;
the children of rewards die with the run; a reward that empties its lists; `rewards test --json` (issues 21, 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import bind, call, write

REWARDS = """
import ctypes, os, subprocess, sys, time

def length(completions, answer, scale=1.0, log_extra=None, log_metric=None, **kwargs):
    log_extra("verdict", ["long" if len(c) > 2 else "short" for c in completions])
    log_metric("calls", 1.0)
    return [scale * len(c) + len(a) for c, a in zip(completions, answer)]

def faulty(completions, **kwargs):
    first = completions[0]
    if first == "hang":
        time.sleep(300)
    if first == "exit":
        os._exit(3)
    if first == "segfault":
        ctypes.string_at(0)
    if first == "raise":
        raise ZeroDivisionError("division by zero")
    return [0.5] * len(completions)

def emptier(prompts, completions, answer, **kwargs):
    scores = [float(c == a) for c, a in zip(completions, answer)]
    prompts.clear(); completions.clear(); answer.clear()
    return scores

def spawner(completions, pid_file, **kwargs):
    child = subprocess.Popen(["sleep", "300"])  # inherits stdout and stderr
    open(pid_file, "w").write(str(child.pid))
    return [1.0] * len(completions)

def pid(completions, **kwargs):
    return [float(os.getpid())] * len(completions)
"""


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@pytest.fixture
def rewards(tmp_path):
    return write(tmp_path / "iso_rewards.py", REWARDS)


@pytest.fixture(autouse=True)
def no_workers_left():
    from grpo_cli import reward_workers

    yield
    reward_workers.shutdown_all()
    assert reward_workers.live_pids() == []


def scored(name, completions, **fields):
    from grpo_cli import scoring

    log = scoring.RewardLog()
    kwargs = scoring.reward_kwargs({"answer": ["x", "yy"]}, [[1], [2]], scoring.run_state(1, 3), log)
    reward = scoring.RewardCall(bind(name, **fields))
    return reward.score(["p", "q"], completions, kwargs), log.take_extra(2), log.take_metrics()


def test_an_isolated_reward_scores_and_logs_as_in_process(rewards):
    in_process = scored(f"{rewards}:length", ["abc", "d"], args={"scale": 2})
    isolated = scored(f"{rewards}:length", ["abc", "d"], args={"scale": 2}, isolation="process")
    expected = (([7.0, 4.0], 0), {"length/verdict": ["long", "short"]}, {"calls": 1.0})
    assert in_process == expected
    assert isolated == expected


def test_an_isolated_reward_runs_in_one_worker_reused_across_calls(rewards):
    from grpo_cli import reward_workers, scoring

    reward = scoring.RewardCall(bind(f"{rewards}:pid", isolation="process"))
    first = reward.score(["p"], ["a"], {})[0][0]
    assert first != os.getpid()
    assert [reward.score(["p"], ["a"], {})[0][0] for _ in range(3)] == [first] * 3
    assert reward_workers.live_pids() == [int(first)]
    reward_workers.shutdown_all()
    assert reward_workers.live_pids() == []


def warm(rewards, **fields):
    from grpo_cli import scoring

    reward = scoring.RewardCall(bind(f"{rewards}:faulty", isolation="process", on_error="zero", **fields))
    assert reward.score(["p"], ["ok"], {}) == (
        [0.5],
        0,
    )  # the worker started: its start is not the call's time
    return reward


def test_a_hanging_isolated_reward_is_killed_at_its_timeout_and_the_next_call_works(rewards):
    from grpo_cli import reward_workers

    reward = warm(rewards, timeout=1.0)
    worker = reward_workers.live_pids()[0]
    started = time.monotonic()
    assert reward.score(["p", "q"], ["hang", "ok"], {}) == ([0.0, 0.0], 2)
    assert 1.0 <= time.monotonic() - started < 3.0  # the timeout, plus killing the worker
    assert gone(worker)
    assert reward.tally.first_error == "ran over its timeout of 1 s (its worker process was killed)"
    assert reward.score(["p"], ["ok"], {}) == ([0.5], 0)


@pytest.mark.parametrize(
    ("completion", "how"), [("exit", "exit code 3"), ("segfault", "killed by signal SIGSEGV")]
)
def test_a_crash_in_an_isolated_reward_costs_that_call_only(rewards, completion, how):
    reward = warm(rewards)
    assert reward.score(["p", "q"], [completion, "ok"], {}) == ([0.0, 0.0], 2)
    assert reward.tally.first_error == f"ended its worker process ({how})"
    assert reward.score(["p", "q"], ["ok", "ok"], {}) == ([0.5, 0.5], 0)


def test_an_isolated_reward_that_raises_or_crashes_under_on_error_fail_names_it(rewards):
    from grpo_cli.scoring import RewardError

    with pytest.raises(RewardError) as raised:
        call(f"{rewards}:faulty", ["raise", "ok"], ["p1", "p2"], isolation="process")
    assert str(raised.value).splitlines()[:3] == [
        f"reward 'faulty' raised ZeroDivisionError: division by zero at {rewards}:17",
        "  prompt: 'p1'",
        "  completion: 'raise'",
    ]
    with pytest.raises(RewardError, match=r"^reward 'faulty' ended its worker process \(exit code 3\)\n"):
        call(f"{rewards}:faulty", ["exit"], isolation="process")
    assert call(f"{rewards}:faulty", ["raise"], isolation="process", on_error="skip") == ([None], 1)


def test_a_worker_dies_with_the_process_that_started_it(rewards):
    code = f"""
import os
from grpo_cli import reward_binding, reward_workers, scoring
from grpo_cli.recipe import RewardEntry
entry = RewardEntry(name={str(rewards) + ":pid"!r}, isolation="process")
scoring.RewardCall(reward_binding.bind(entry, "r")).score(["p"], ["a"], {{}})
print(reward_workers.live_pids()[0], flush=True)
os._exit(0)  # no exit handler runs: only the parent-death signal can end the worker
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    worker = int(result.stdout.split()[-1])
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker)


def test_isolation_is_checked_by_validate(cli, tiny_recipe):
    result = cli("validate", tiny_recipe({"rewards": [{"name": "accuracy", "isolation": "thread"}]}))
    assert result.exit_code == 2
    assert "rewards[0].isolation" in result.stderr and "'in_process' or 'process'" in result.stderr
    assert (
        cli("validate", tiny_recipe({"rewards": [{"name": "accuracy", "isolation": "process"}]})).exit_code
        == 0
    )


def test_a_reward_model_cannot_be_isolated(reward_model_dir):
    from grpo_cli.errors import UserError

    with pytest.raises(
        UserError, match=r"isolation: process is for reward functions; a reward model runs in"
    ):
        bind(f"model:{reward_model_dir}", isolation="process")


@pytest.mark.parametrize("on_error", ["zero", "skip"])
def test_a_reward_that_empties_its_lists_changes_nothing_for_the_next(rewards, on_error):
    from grpo_cli import scoring

    first = scoring.RewardCall(bind(f"{rewards}:emptier", on_error=on_error))
    second = scoring.RewardCall(bind(f"{rewards}:emptier", on_error=on_error))
    prompts, completions, columns = ["p", "q"], ["5", "6"], {"answer": ["5", "5"]}
    assert first.score(prompts, completions, columns) == ([1.0, 0.0], 0)
    assert second.score(prompts, completions, columns) == ([1.0, 0.0], 0)
    assert (prompts, completions, columns) == (["p", "q"], ["5", "6"], {"answer": ["5", "5"]})


def grpo_cli(*args, **run):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "grpo_cli", *map(str, args)], env=env, **run)


def test_rewards_test_json_gives_scores_total_verdict_and_details(tmp_path):
    path = write(
        tmp_path / "judged.py",
        """
        def judged(completions, answer, log_extra, **kwargs):
            ok = [c == a for c, a in zip(completions, answer)]
            log_extra("verdict", ["passed" if o else "failed" for o in ok])
            log_extra("details", [{"expected": a} for a in answer])
            return [float(o) for o in ok]
        """,
    )
    args = [
        "rewards",
        "test",
        "-r",
        f"{path}:judged",
        "-r",
        "accuracy",
        "--column",
        "answer=5",
        "-c",
        "5",
        "-c",
        "6",
    ]
    result = grpo_cli(*args, "--json", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "completion": "5",
            "scores": {"judged": 1.0, "accuracy": 1.0},
            "total": 2.0,
            "advantage": pytest.approx(0.7070567847218314),
            "verdict": {"judged": "passed"},
            "details": {"judged": {"expected": "5"}},
        },
        {
            "completion": "6",
            "scores": {"judged": 0.0, "accuracy": 0.0},
            "total": 0.0,
            "advantage": pytest.approx(-0.7070567847218314),
            "verdict": {"judged": "failed"},
            "details": {"judged": {"expected": "5"}},
        },
    ]


def test_a_process_a_reward_leaves_running_dies_with_the_cli(rewards, tmp_path):
    pid_file = tmp_path / "child.pid"
    command = [
        "rewards",
        "test",
        "-r",
        f"{rewards}:spawner",
        "--arg",
        f"pid_file={pid_file}",
        "-c",
        "x",
        "--json",
    ]
    started = time.monotonic()
    # communicate() returns once every holder of the pipes closed them: the sleep would hold them for 300 s.
    result = grpo_cli(*command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert gone(int(pid_file.read_text()))


def test_os_exit_in_an_isolated_reward_is_one_scored_error_not_the_end(rewards, tiny_recipe, tmp_path):
    recipe = yaml.safe_load(tiny_recipe().read_text())
    recipe["rewards"] = [{"name": f"{rewards}:faulty", "isolation": "process", "on_error": "zero"}]
    path = tmp_path / "iso.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = grpo_cli(
        "rewards",
        "test",
        "--recipe",
        path,
        "-c",
        "exit",
        "-c",
        "ok",
        "--json",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["scores"] for line in result.stdout.splitlines()] == [{"faulty": 0.0}] * 2


STAGED = """
import os, time
from pathlib import Path

def staged(completions, counter, **kwargs):
    '''Call 1 hangs, call 2 ends its process, every later call scores 1.0 (the count survives the worker).'''
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls == 1:
        time.sleep(300)
    if calls == 2:
        os._exit(3)
    return [1.0] * len(completions)

def emptier(prompts, completions, **kwargs):
    prompts.clear(); completions.clear()
    return []
"""


@pytest.mark.slow
def test_grpo_trains_every_step_with_an_isolated_reward_that_hangs_then_crashes(tiny_recipe, tmp_path):
    path = write(tmp_path / "staged.py", STAGED)
    recipe = tiny_recipe(
        {
            "rewards": [
                {
                    "name": f"{path}:staged",
                    "isolation": "process",
                    "timeout": 2,
                    "on_error": "zero",
                    "args": {"counter": str(tmp_path / "calls")},
                },
                {"name": f"{path}:emptier", "on_error": "skip"},  # in-process: empties its lists, then fails
            ],
            "trainer": {"max_steps": 3, "save_steps": 100},
        }
    )
    result = grpo_cli("train", recipe, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = [
        json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [(r["rewards/staged"], r["rewards/staged/errors"]) for r in rows] == [
        (0.0, 8.0),
        (0.0, 8.0),
        (1.0, 0.0),
    ]
    assert [r["rewards/emptier/errors"] for r in rows] == [8.0] * 3
    assert 2.0 <= rows[0]["rewards/staged/seconds"] < 4.0
