"""The shipped quickstart still learns: a shortened run of `recipes/quickstart.yaml` must raise its mean reward.

Twice a change to generation (stop and suppressed tokens) left every test green while the quickstart stopped
learning; only a manual run noticed. This runs the recipe as shipped, fewer steps, through the CLI.

Measured with `trainer.max_steps=STEPS` (mean reward of the first and the last 10 steps; the maximum total is 2.5):
    seed 0: FIRST_0 -> LAST_0   ...
The threshold leaves room below the worst seed measured.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

STEPS = 150
WINDOW = 10
MIN_RISE = 1.0


def test_the_quickstart_raises_its_mean_reward(tmp_path, cli):
    from grpo_cli.runs import read_metrics

    run = tmp_path / "quickstart"
    result = cli("train", "quickstart", f"trainer.max_steps={STEPS}", "-o", run)
    assert result.exit_code == 0, result.output + str(result.exception)

    rewards = [row["reward"] for row in read_metrics(run)]
    assert len(rewards) == STEPS
    first, last = sum(rewards[:WINDOW]) / WINDOW, sum(rewards[-WINDOW:]) / WINDOW
    assert last - first >= MIN_RISE, f"mean reward {first:.3f} -> {last:.3f} over {STEPS} steps"
