"""A reward that fails on much of what it scores, under `on_error: zero` or `skip`, is said loudly: one warning
when it happens, the count in summary.json and in train's done line (issue 22, item 11)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from tests.helpers import bind, write

EXPLODE = """
def explode(completions, **kwargs):
    raise RuntimeError("the judge is down")
"""
FIRST_ERROR = "raised RuntimeError: the judge is down"


@pytest.fixture
def explode(tmp_path):
    return write(tmp_path / "explode.py", EXPLODE)


def reward_call(path, **fields):
    from grpo_cli import scoring

    return scoring.RewardCall(bind(f"{path}:explode", **fields))


def test_a_call_counts_what_it_scored_and_keeps_the_first_error(explode):
    call = reward_call(explode, on_error="zero")
    for _ in range(3):
        assert call.score(["p"] * 4, ["c"] * 4, {}) == ([0.0] * 4, 4)
    assert call.tally.as_dict() == {"completions": 12, "errors": 12, "first_error": FIRST_ERROR}


@pytest.mark.parametrize(
    ("on_error", "instead"),
    [
        ("zero", "scores each 0, so the run learns from those zeros"),
        ("skip", "leaves them out (None), so the run learns from the other rewards alone"),
    ],
)
def test_the_warning_names_the_reward_the_share_the_policy_and_the_first_error(explode, on_error, instead):
    call = reward_call(explode, on_error=on_error)
    call.score(["p"], ["c"], {})
    assert call.error_warning(16, 7, step=3) is None  # under half
    assert call.error_warning(16, 8, step=3) == (
        f"reward 'explode' failed on 8 of 16 completions (50%) at step 3, and on_error: {on_error} {instead}; "
        f"first error: {FIRST_ERROR}"
    )


def test_the_logger_warns_once_per_reward_and_sums_up_for_summary_json(explode, tmp_path, monkeypatch):
    from grpo_cli import output
    from grpo_cli.callbacks import RunLogger

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(output, "_warned", set())
    call = reward_call(explode, on_error="zero")
    logger = RunLogger(tmp_path, algorithm="grpo", rewards=[call])
    args = SimpleNamespace(logging_steps=1, logging_strategy="steps", logging_first_step=False)
    state = SimpleNamespace(global_step=0, max_steps=3, is_world_process_zero=True)
    logger.on_train_begin(args, state, None)
    for step in (1, 2, 3):
        state.global_step = step
        call.score(["p"] * 8, ["c"] * 8, {})
        logger.on_log(args, state, None, logs={"reward": 0.0})
    logger.on_train_end(args, state, None)
    warnings = [line for line in stream.getvalue().splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: reward 'explode' failed on 8 of 8 completions (100%) at step 1, and on_error: zero scores "
        f"each 0, so the run learns from those zeros; first error: {FIRST_ERROR}"
    ]
    assert logger.reward_errors() == {
        "explode": {"completions": 24, "errors": 24, "first_error": FIRST_ERROR}
    }


def test_a_run_without_rewards_has_no_reward_errors(tmp_path):
    from grpo_cli import run_files
    from grpo_cli.callbacks import RunLogger

    assert RunLogger(tmp_path, algorithm="sft").reward_errors() == {}
    (tmp_path / "metrics.jsonl").write_text("")
    assert run_files.write_summary(tmp_path, algorithm="sft", wall_time_s=1.0)["reward_errors"] == {}


def check_said_everywhere(result, run, completions: int):
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "reward 'explode'" in line]
    assert warnings == [
        f"warning: reward 'explode' failed on 8 of 8 completions (100%) at step 1, and on_error: zero scores "
        f"each 0, so the run learns from those zeros; first error: {FIRST_ERROR}"
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reward_errors"] == {
        "accuracy": {"completions": completions, "errors": 0, "first_error": None},
        "explode": {"completions": completions, "errors": completions, "first_error": FIRST_ERROR},
    }
    done = result.stdout.splitlines()[-1]
    assert (
        f"; reward 'explode' failed on {completions} of {completions} completions (100%); wrote {run}" in done
    )


REWARDS = [{"name": "accuracy"}, {"name": "./explode.py:explode", "on_error": "zero"}]


@pytest.fixture
def fresh_warnings(monkeypatch):
    """output.warn_once's memory of one process, as a `grpo-cli train` starts with (the tests share a process)."""
    from grpo_cli import output

    monkeypatch.setattr(output, "_warned", set())


@pytest.mark.slow
def test_grpo_says_a_reward_that_fails_on_every_call(cli, tiny_recipe, explode, tmp_path, fresh_warnings):
    result = cli("train", tiny_recipe({"rewards": REWARDS, "trainer": {"max_steps": 2, "save_steps": 100}}))
    check_said_everywhere(result, tmp_path / "runs" / "tiny", 16)  # 8 completions a step


@pytest.mark.slow
def test_ppo_says_a_reward_that_fails_on_every_call(cli, ppo_recipe, explode, tmp_path, fresh_warnings):
    result = cli("train", ppo_recipe({"rewards": REWARDS, "trainer": {"max_steps": 2, "save_steps": 100}}))
    check_said_everywhere(result, tmp_path / "runs" / "ppo", 16)  # 8 rollouts a step
