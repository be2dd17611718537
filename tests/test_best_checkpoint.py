"""Best-checkpoint tracking (issue 24, item 8): grpo-cli gives its trainers no held-out set, so nothing evaluates
during training and the settings that track the best checkpoint are refused up front."""

from __future__ import annotations

import pytest

from grpo_cli import trainer_fields


def test_best_checkpoint_settings_are_refused_as_nothing_evaluates_during_training():
    """Issue 24, item 8: validate passed load_best_model_at_end; with no held-out set given to the trainer,
    eval_strategy crashed the run once its directory existed, and save_strategy: best saved nothing."""
    assert trainer_fields.check_ranges({"load_best_model_at_end": True, "save_strategy": "best"}) == [
        "trainer.save_strategy: 'best' needs evaluation during training, which grpo-cli does not run, so it "
        "would save no checkpoint; use 'steps' or 'epoch'",
        "trainer.load_best_model_at_end: grpo-cli does not evaluate during training, so there is no best "
        "checkpoint to load; compare checkpoints with `grpo-cli eval --adapter RUN_DIR/checkpoint-N`",
    ]
    assert [p.split(":")[0] for p in trainer_fields.check_ranges({"eval_strategy": "steps"})] == [
        "trainer.eval_strategy"
    ]
    assert trainer_fields.check_ranges({"eval_strategy": "no", "save_strategy": "steps"}) == []


@pytest.mark.parametrize(
    "settings",
    [
        {"load_best_model_at_end": True, "save_strategy": "best"},
        {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 2},
    ],
)
def test_train_refuses_best_checkpoint_tracking_before_the_run_starts(cli, tiny_recipe, settings):
    recipe = tiny_recipe({"trainer": settings})
    assert cli("validate", recipe).exit_code == 2
    result = cli("train", recipe)
    assert result.exit_code == 2, result.output
    assert "trainer.load_best_model_at_end: grpo-cli does not evaluate during training" in result.stderr
    assert not (recipe.parent / "runs" / "tiny").exists()
