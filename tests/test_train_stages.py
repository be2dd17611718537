"""Real tiny runs of every stage, chained by run directory through one pipeline file: SFT (full) -> reward model
(LoRA, score head in full) -> GRPO (an adapter on the SFT model, the reward run as a `model:` reward) -> PPO
(from the GRPO run, its adapter merged; the reward run as its reward), then `eval` of the SFT and reward runs
and of the whole pipeline, and the pipeline run again (every stage skipped)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import PPO_RECIPE, TINY_RECIPE

pytestmark = pytest.mark.slow

TASK = {"generate": {"task": "addition", "size": 40}, "prompt": "{question}", "eval_size": 8}
STAGES = {
    "sft.yaml": {
        **TINY_RECIPE,
        "algorithm": "sft",
        "output_dir": "runs/sft",
        "lora": None,  # full fine-tuning: a LoRA adapter on a random model cannot move its tied embeddings
        "rewards": [],
        "dataset": {**TASK, "completion": "{answer}"},
        "eval": {"rewards": [{"name": "accuracy"}], "max_new_tokens": 3},
        "trainer": {
            "learning_rate": 0.02,
            "max_steps": 12,
            "per_device_train_batch_size": 16,
            "save_steps": 6,
        },
    },
    "rm.yaml": {
        **TINY_RECIPE,
        "algorithm": "reward",
        "output_dir": "runs/rm",
        "rewards": [],
        "dataset": {"source": "pairs.jsonl", "prompt": "{question}", "eval_size": 16},
        "trainer": {
            "learning_rate": 0.02,
            "max_steps": 16,
            "per_device_train_batch_size": 16,
            "save_steps": 8,
        },
    },
    "grpo.yaml": {
        **TINY_RECIPE,
        "output_dir": "runs/grpo",
        "model": {"run": "runs/sft"},
        "rewards": [{"name": "accuracy"}, {"name": "model:runs/rm", "weight": 0.5}],
        "trainer": {**TINY_RECIPE["trainer"], "max_steps": 2},
    },
    "ppo.yaml": {
        **copy.deepcopy(PPO_RECIPE),
        "output_dir": "runs/ppo",
        "model": {"run": "runs/grpo"},  # a LoRA run: its adapter merged into its base (the SFT model)
        "lora": None,
        "rewards": [{"name": "model:runs/rm"}],
        "trainer": {**PPO_RECIPE["trainer"], "max_steps": 2},
    },
}


def preference_pairs(count: int) -> list[dict]:
    """Pairs a tiny model can learn in a few steps: chosen answers are high digits, rejected ones low."""
    return [
        {"question": f"{i % 10}+{i // 10}=", "chosen": str(5 + i % 5), "rejected": str((i * 3) % 5)}
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    import os

    from typer.testing import CliRunner

    from grpo_cli.cli import app

    tmp = tmp_path_factory.mktemp("stages")
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_pairs(80)))
    for name, recipe in STAGES.items():
        (tmp / name).write_text(yaml.safe_dump(recipe, sort_keys=False))
    (tmp / "chain.yaml").write_text(yaml.safe_dump({"stages": list(STAGES)}))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        result = CliRunner().invoke(app, ["train", "chain.yaml"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        again = CliRunner().invoke(app, ["train", "chain.yaml"])
        yield tmp / "runs", result, again
    finally:
        os.chdir(cwd)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def test_sft_loss_falls_and_the_weights_change(pipeline_run):
    import torch

    runs, _result, _again = pipeline_run
    rows = metrics(runs / "sft")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert sum(r["loss"] for r in rows[-3:]) / 3 < 0.8 * sum(r["loss"] for r in rows[:3]) / 3
    assert all("token_accuracy" in r for r in rows)
    trained = tensors(runs / "sft" / "model.safetensors")
    start = tensors(runs / "sft" / "base_model" / "model.safetensors")
    assert all(not torch.equal(trained[name], start[name]) for name in trained if "norm" not in name)
    summary = json.loads((runs / "sft" / "summary.json").read_text())
    assert summary["algorithm"] == "sft" and summary["steps"] == 12
    assert (runs / "sft" / "README.md").is_file() and (runs / "sft" / "checkpoint-12").is_dir()


def test_reward_model_trains_its_score_head_and_ranks_held_out_pairs(pipeline_run):
    from grpo_cli.recipe import load_recipe
    from grpo_cli.workflows import evaluate_pairs

    runs, _result, _again = pipeline_run
    rows = metrics(runs / "rm")
    assert {"loss", "pairwise_accuracy", "margin"} <= set(rows[-1])
    assert rows[-1]["loss"] < rows[0]["loss"]
    adapter = tensors(runs / "rm" / "adapter_model.safetensors")
    assert any("score" in name for name in adapter)  # the head is saved (trained in full) with the adapter
    recipe = load_recipe(runs / "rm" / "recipe.yaml")
    result = evaluate_pairs.run(recipe, adapter=runs / "rm", baseline=True)
    assert result.settings["num_prompts"] == 16
    assert result.metrics["tuned"]["pairwise_accuracy"] >= 0.75  # chance is 0.5
    assert result.metrics["tuned"]["margin"] > 0
    assert result.metrics["delta"]["pairwise_accuracy"] > 0.2
    eval_path, _samples = result.write(runs / "rm" / "eval")
    assert json.loads(eval_path.read_text())["metrics"]["tuned"]["pairwise_accuracy"] >= 0.75


def test_grpo_starts_from_the_sft_model_and_scores_with_the_reward_run(pipeline_run):
    import torch

    runs, _result, _again = pipeline_run
    start = tensors(runs / "grpo" / "base_model" / "model.safetensors")
    sft = tensors(runs / "sft" / "model.safetensors")
    assert start.keys() == sft.keys() and all(torch.equal(start[name], sft[name]) for name in start)
    rows = metrics(runs / "grpo")
    assert len(rows) == 2 and all(r["rewards/rm"] is not None for r in rows)
    assert (runs / "grpo" / "adapter_config.json").is_file()


def test_ppo_starts_from_the_grpo_model_merged_with_the_reward_run_as_its_reward(pipeline_run):
    import torch

    from grpo_cli import models

    runs, _result, _again = pipeline_run
    start = tensors(runs / "ppo" / "base_model" / "model.safetensors")
    merged = models.load_run_model(runs / "grpo")[0].state_dict()
    assert all(
        torch.equal(start[name], merged[name]) for name in start
    )  # the GRPO adapter merged, then saved
    sft = tensors(runs / "sft" / "model.safetensors")
    assert any(not torch.equal(start[name], sft[name]) for name in start)  # ... and the adapter changed it
    rows = metrics(runs / "ppo")
    assert len(rows) == 2 and all(r["rewards/rm"] is not None for r in rows)
    assert json.loads((runs / "ppo" / "summary.json").read_text())["algorithm"] == "ppo"


def test_eval_of_an_sft_run_generates_and_scores(pipeline_run):
    from grpo_cli.recipe import load_recipe
    from grpo_cli.workflows import evaluate_generations as evaluate

    runs, _result, _again = pipeline_run
    result = evaluate.run(load_recipe(runs / "sft" / "recipe.yaml"), adapter=runs / "sft", baseline=True)
    assert result.settings["num_prompts"] == 8 and result.settings["max_completion_length"] == 3
    assert set(result.metrics) == {"tuned", "base", "delta"}
    assert "rewards/accuracy/pass@1" in result.metrics["tuned"]


def test_the_pipeline_again_skips_every_finished_stage(pipeline_run):
    _runs, result, again = pipeline_run
    assert again.exit_code == 0, again.output
    assert [line.split(" -> ")[0] for line in again.stdout.splitlines()[-4:]] == list(STAGES)
    assert again.stdout.count("finished before, skipped") == 4
    assert result.stdout.count("finished before, skipped") == 0


def test_eval_of_the_pipeline_evaluates_every_stage_against_its_start(pipeline_run, monkeypatch):
    from typer.testing import CliRunner

    from grpo_cli.cli import app

    runs, _result, _again = pipeline_run
    monkeypatch.chdir(runs.parent)
    monkeypatch.setenv("COLUMNS", "250")  # the summary's cells on one line each
    result = CliRunner().invoke(app, ["eval", "chain.yaml"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    reports = {
        name: json.loads((runs / name / "eval" / "eval.json").read_text())
        for name in ("sft", "rm", "grpo", "ppo")
    }
    assert all((runs / name / "eval" / "eval_samples.jsonl").is_file() for name in reports)
    assert all(set(report["metrics"]) == {"tuned", "base", "delta"} for report in reports.values())
    # Each stage's own table as it finishes, then the summary: its rows are the last table's.
    assert result.stdout.count("wrote runs/") == 4
    summary = result.stdout[result.stdout.rindex("chain.yaml: each stage's run") :]
    rows = [
        " | ".join(c.strip() for c in line.split("│")[1:-1]) for line in summary.splitlines() if "│" in line
    ]

    def numbers(name: str, key: str) -> str:
        tuned, base, delta = (reports[name]["metrics"][role][key] for role in ("tuned", "base", "delta"))
        return f"{tuned:.3f} | {base:.3f} | {delta:+.3f}"

    assert rows == [
        f"sft.yaml | runs/sft | rewards/accuracy (eval only) | {numbers('sft', 'rewards/accuracy')} | "
        "untrained (from_config)",
        f"rm.yaml | runs/rm | pairwise_accuracy | {numbers('rm', 'pairwise_accuracy')} | "
        "untrained (from_config)",
        f" |  | margin | {numbers('rm', 'margin')} | ",
        f"grpo.yaml | runs/grpo | rewards/accuracy | {numbers('grpo', 'rewards/accuracy')} | runs/sft",
        f"ppo.yaml | runs/ppo | rewards/rm | {numbers('ppo', 'rewards/rm')} | runs/grpo",
    ]
    # The baselines are the models each stage started from, kept in its run (the SFT model, the merged GRPO one).
    for name in ("grpo", "ppo"):
        assert reports[name]["models"]["base"]["path"] == str((runs / name / "base_model").resolve())

    # The same evaluation as one stage's own command: same prompts, greedy decoding, same numbers.
    alone = CliRunner().invoke(
        app, ["eval", "sft.yaml", "--adapter", "runs/sft", "--baseline", "-o", "alone"]
    )
    assert alone.exit_code == 0, alone.output
    assert (
        json.loads((runs.parent / "alone" / "eval.json").read_text())["metrics"] == reports["sft"]["metrics"]
    )
