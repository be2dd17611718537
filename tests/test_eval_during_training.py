"""Held-out evaluation during training (`eval.every`), its reward-hacking alarm, and report's figure of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_cli.run_files import read_metrics

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def grpo_cli(*args, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", *map(str, args)], capture_output=True, text=True, env=env
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def evaluations(run: Path) -> list[dict]:
    return [row for row in read_metrics(run) if "eval/seconds" in row]


# ---- validate ----


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.every=0", "eval.every: Input should be greater than or equal to 1, got 0"),
        ("eval.alarm_window=1", "eval.alarm_window: Input should be greater than or equal to 2, got 1"),
        ("eval.alarm_drop=0", "eval.alarm_drop: Input should be greater than 0, got 0"),
        ("distributed.backend=fsdp", "eval.every: evaluation during training runs on the main process alone"),
    ],
)
def test_validate_checks_the_eval_keys(tiny_recipe, override, message):
    recipe = tiny_recipe({"eval": {"every": 2}})
    result = grpo_cli("validate", recipe, override)
    assert result.returncode == 2
    assert message in result.stderr


def test_evaluating_during_training_needs_held_out_data(tiny_recipe):
    recipe = tiny_recipe({"dataset": {"eval_size": None}})
    result = grpo_cli("validate", recipe, "eval.every=2")
    assert result.returncode == 2
    assert (
        "eval.every: evaluation during training needs held-out data: set dataset.eval_size" in result.stderr
    )


def test_rows_of_one_step_merge(tmp_path):
    lines = [{"step": 1, "reward": 0.5, "time": 1.0}, {"step": 2, "eval/reward": 0.25, "time": 2.0}]
    lines += [{"step": 2, "reward": 0.75, "time": 2.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert read_metrics(tmp_path) == [
        {"step": 1, "reward": 0.5, "time": 1.0},
        {"step": 2, "eval/reward": 0.25, "reward": 0.75, "time": 2.5},
    ]


# ---- every algorithm, tiny ----


@pytest.mark.slow
def test_grpo_evaluates_at_start_every_n_steps_and_the_end_and_resumes(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"eval": {"every": 3, "limit": 5}, "trainer": {"max_steps": 4, "save_steps": 2}})
    run = tmp_path / "runs" / "tiny"
    result = grpo_cli("train", recipe, check=True)
    assert [row["step"] for row in evaluations(run)] == [0, 3, 4]
    assert "held-out eval at step 3: rewards/accuracy " in result.stderr
    rows = {row["step"]: row for row in read_metrics(run)}
    assert "reward" in rows[3] and "eval/train_reward" in rows[3]  # one row: training and held-out metrics
    samples = [json.loads(line) for line in (run / "eval_during" / "step-3.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and {s["step"] for s in samples} == {3}
    assert set(samples[0]["rewards"]) == {"accuracy", "closeness"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_eval"]["evaluations"] == 3
    assert summary["held_out_eval"]["metric"] == "eval/rewards/accuracy"
    assert summary["divergence"] == []

    grpo_cli("train", recipe, "trainer.max_steps=6", "--resume", check=True)
    assert [row["step"] for row in evaluations(run)] == [0, 3, 4, 6]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_eval"]["evaluations"] == 4  # those before the resume count too


@pytest.mark.slow
def test_ppo_evaluates_with_the_policy_it_trains(ppo_recipe, tmp_path):
    recipe = ppo_recipe({"eval": {"every": 1, "limit": 4}})
    grpo_cli("train", recipe, check=True)
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    steps = json.loads((run / "summary.json").read_text())["steps"]
    assert [row["step"] for row in evaluations(run)] == list(range(steps + 1))
    assert all(isinstance(row["eval/rewards/accuracy"], float) for row in evaluations(run))


@pytest.mark.slow
def test_sft_gets_generation_metrics(tmp_path):
    import copy

    from helpers import TINY_RECIPE

    recipe = copy.deepcopy(TINY_RECIPE)
    del recipe["rewards"], recipe["trainer"]["num_generations"], recipe["trainer"]["max_completion_length"]
    recipe["algorithm"], recipe["output_dir"] = "sft", str(tmp_path / "sft")
    recipe["dataset"]["completion"] = "{answer}"
    recipe["eval"] = {"every": 2, "rewards": [{"name": "accuracy"}], "max_new_tokens": 3}
    recipe["trainer"]["max_steps"] = 2
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))
    grpo_cli("train", tmp_path / "sft.yaml", check=True)
    rows = evaluations(tmp_path / "sft")
    assert [row["step"] for row in rows] == [0, 2]
    assert {"eval/rewards/accuracy", "eval/completion_length"} <= set(rows[-1])
    assert "eval/diverging" not in rows[-1]  # no training reward: no alarm


@pytest.mark.slow
def test_reward_runs_get_pairwise_accuracy(tmp_path):
    from tiny_runs import reward_recipe

    recipe = reward_recipe(tmp_path)
    grpo_cli("train", recipe, "eval.every=2", "trainer.max_steps=2", check=True)
    rows = evaluations(tmp_path / "runs" / "rm")
    assert [row["step"] for row in rows] == [0, 2]
    assert 0.0 <= rows[-1]["eval/pairwise_accuracy"] <= 1.0


# ---- the alarm, for real: a gamed reward and an honest one ----


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    """The pipeline's SFT stage, shortened: a tiny model that adds right about 7 times in 10 (held-out)."""
    out = tmp_path_factory.mktemp("sft") / "sft"
    grpo_cli(
        "train",
        RECIPES / "pipeline" / "sft.yaml",
        "trainer.max_steps=400",
        "trainer.save_steps=400",
        "-o",
        out,
        check=True,
    )
    return out


def addition_grpo(directory: Path, sft: Path, rewards: list, eval_rewards: list, **eval_keys) -> Path:
    """GRPO from the SFT model on two-digit addition, evaluated every 10 steps on 50 held-out problems."""
    recipe = {
        "algorithm": "grpo",
        "seed": 0,
        "output_dir": str(directory / "run"),
        "model": {"run": str(sft)},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "dataset": {
            "generate": {"task": "addition", "size": 900, "options": {"max_operand": 29}},
            "prompt": "{question}",
            "eval_size": 100,
        },
        "rewards": rewards,
        "eval": {"rewards": eval_rewards, "every": 10, "limit": 50, **eval_keys},
        "trainer": {
            "learning_rate": 5.0e-4,
            "lr_scheduler_type": "constant",
            "num_generations": 8,
            "per_device_train_batch_size": 64,
            "max_completion_length": 3,
            "max_steps": 60,
            "save_steps": 60,
        },
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


GAMED = {"rewards": [{"name": "length", "args": {"target": 3}}], "eval_rewards": [{"name": "accuracy"}]}


@pytest.mark.slow
def test_a_gamed_reward_trips_the_alarm(sft_run, tmp_path):
    """Three characters pay: the policy learns to write them, held-out accuracy collapses."""
    recipe = addition_grpo(tmp_path, sft_run, **GAMED)
    result = grpo_cli("train", recipe, check=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # Once, while accuracy collapses (0.72 -> 0.64 -> 0.50 -> 0.38 -> 0.20 at steps 0..40 in one run; the SFT
    # model's exact numbers vary from run to run on a loaded machine, so the step is 20 to 50 of the 60).
    (trip,) = summary["divergence"]
    assert 20 <= trip["step"] <= 50 and trip["metric"] == "eval/rewards/accuracy"
    # A fall past the alarm's noise threshold here (2 standard errors over 50 samples: about 0.19).
    assert trip["held_out"][0] - trip["held_out"][1] >= 0.15
    assert trip["train_reward"][1] > trip["train_reward"][0]
    assert result.stderr.count("reward hacking?") == 1
    assert f"reward hacking? at step {trip['step']} the held-out eval/rewards/accuracy fell" in result.stderr

    grpo_cli("report", tmp_path / "run", "-o", tmp_path / "report", check=True)
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"**Reward hacking? At step {trip['step']} the training reward had risen" in text
    assert (tmp_path / "report" / "held_out_vs_training_reward.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_honest_reward_does_not(sft_run, tmp_path):
    recipe = addition_grpo(tmp_path, sft_run, rewards=[{"name": "accuracy"}], eval_rewards=[])
    result = grpo_cli("train", recipe, check=True)
    assert "reward hacking?" not in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["divergence"] == []
    accuracy = [row["eval/rewards/accuracy"] for row in evaluations(tmp_path / "run")]
    assert accuracy[-1] > accuracy[0]


@pytest.mark.slow
def test_stop_when_diverging_saves_and_says_why(sft_run, tmp_path):
    recipe = addition_grpo(tmp_path, sft_run, **GAMED, stop_when_diverging=True)
    result = grpo_cli("train", recipe)
    assert result.returncode == 1
    stopped = re.search(
        r"stopped at step (\d+): the held-out eval/rewards/accuracy fell while the training reward rose",
        result.stderr,
    )
    assert stopped and 20 <= int(stopped.group(1)) <= 50, result.stderr[-2000:]  # where the alarm trips
    assert (tmp_path / "run" / f"checkpoint-{stopped.group(1)}" / "trainer_state.json").is_file()
    assert not (tmp_path / "run" / "summary.json").exists()
    # Resumed, the episode under way stays quiet: the run trains to its end.
    resumed = grpo_cli("train", recipe, "--resume", check=True)
    assert "reward hacking?" not in resumed.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 60
