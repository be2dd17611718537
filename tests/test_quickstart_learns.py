"""The shipped quickstart, run as shipped: `grpo-cli train quickstart` (SFT from scratch, then GRPO + LoRA on the
SFT model), each stage measured on the 100 held-out problems as the README measures it (greedy, `eval --baseline`).

Measured with seed 0 (deterministic on a CPU): untrained 0.00, SFT 0.75, GRPO 0.92. The bounds leave room for
another CPU's arithmetic while still failing when a stage stops helping: SFT must learn most of the task, and
GRPO must end clearly above the SFT model it started from. About 30 s on 2 free CPU cores.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

HELD_OUT = 100
SFT_AT_LEAST = 0.6
GRPO_AT_LEAST = 0.85
GRPO_GAIN_AT_LEAST = 0.08


def test_the_quickstart_trains_sft_then_grpo_and_each_stage_helps(
    tmp_path, cli, monkeypatch, one_torch_thread
):
    from grpo_cli.recipe import load_recipe
    from grpo_cli.workflows import evaluate_generations as evaluate

    monkeypatch.chdir(tmp_path)
    result = cli("train", "quickstart")
    assert result.exit_code == 0, result.output + str(result.exception)

    accuracy = {}
    for stage in ("sft", "grpo"):
        run = tmp_path / "runs" / f"pipeline-{stage}"
        evaluated = evaluate.run(load_recipe(run / "recipe.yaml"), adapter=run, baseline=True)
        assert evaluated.settings["num_prompts"] == HELD_OUT
        accuracy[stage] = evaluated.metrics["tuned"]["rewards/accuracy"]
        accuracy[f"{stage} baseline"] = evaluated.metrics["base"]["rewards/accuracy"]

    assert accuracy["sft baseline"] == 0.0  # a random model never writes the sum
    assert accuracy["sft"] >= SFT_AT_LEAST, accuracy
    assert accuracy["grpo baseline"] == accuracy["sft"]  # GRPO's baseline is exactly the SFT model
    assert accuracy["grpo"] >= GRPO_AT_LEAST, accuracy
    assert accuracy["grpo"] - accuracy["sft"] >= GRPO_GAIN_AT_LEAST, accuracy
