"""A pipeline stage whose recipe changed since its run finished is not skipped as finished (issue 22, item 12):
`train PIPELINE` stops naming the changed keys and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_RECIPE

STAGE = {**TINY_RECIPE, "output_dir": "runs/tiny", "trainer": {**TINY_RECIPE["trainer"], "max_steps": 2}}
HINT = (
    "; retrain with `grpo-cli train chain.yaml --overwrite` (every stage), or give the stage a new output_dir"
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """chain.yaml with one stage, stage.yaml (STAGE), in the current directory; returns write(stage)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chain.yaml").write_text(yaml.safe_dump({"stages": ["stage.yaml"]}))

    def write(stage: dict):
        (tmp_path / "stage.yaml").write_text(yaml.safe_dump(stage, sort_keys=False))

    write(STAGE)
    return write


def finished_as(stage: dict) -> None:
    """runs/tiny made as a finished run of `stage` would be, without training: its recipe.yaml and summary.json."""
    from grpo_cli.validation import validate

    then = Path("then.yaml")
    then.write_text(yaml.safe_dump(stage, sort_keys=False))
    run = Path("runs/tiny")
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(validate(str(then)).to_yaml())
    (run / "summary.json").write_text(json.dumps({"algorithm": "grpo", "steps": 2}))


def changed(then: dict) -> list[str]:
    """What the pipeline's stage changed since a run of `then` finished."""
    from grpo_cli import pipeline

    finished_as(then)
    [(_path, recipe)] = pipeline.validate("chain.yaml")
    return pipeline.changed_keys(recipe, yaml.safe_load(Path("runs/tiny/recipe.yaml").read_text()))


def test_the_same_recipe_has_not_changed(project):
    assert changed(STAGE) == []


def test_a_changed_value_is_named_by_its_dotted_path_with_both_values(project):
    project({**STAGE, "trainer": {**STAGE["trainer"], "learning_rate": 0.01}, "seed": 3})
    assert changed(STAGE) == ["seed (0 -> 3)", "trainer.learning_rate (0.05 -> 0.01)"]


def test_list_items_are_named_by_index(project):
    project({**STAGE, "rewards": [{"name": "accuracy"}, {"name": "closeness", "weight": 2.0}]})
    assert changed(STAGE) == ["rewards[1].weight (0.5 -> 2.0)"]


def test_writing_down_a_default_or_changing_eval_settings_is_no_change(project):
    trainer = {**STAGE["trainer"], "loss_type": "dapo", "beta": 0.0, "logging_steps": 1}
    project({**STAGE, "trainer": trainer, "eval": {"num_samples": 4}})
    assert changed(STAGE) == []


def test_a_default_changed_to_another_value_is_a_change(project):
    project({**STAGE, "trainer": {**STAGE["trainer"], "loss_type": "grpo"}})
    assert changed(STAGE) == ["trainer.loss_type ('dapo' -> 'grpo')"]


def test_train_stops_before_training_anything_naming_the_changed_keys(project, cli):
    finished_as(STAGE)
    project({**STAGE, "trainer": {**STAGE["trainer"], "learning_rate": 0.01}})
    result = cli("train", "chain.yaml")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: stage 1/1 (grpo, stage.yaml -> runs/tiny) changed since its run finished: "
        f"trainer.learning_rate (0.05 -> 0.01){HINT}\n"
    )


@pytest.mark.slow
def test_a_trained_stage_edited_is_refused_and_unchanged_is_skipped(project, cli):
    first = cli("train", "chain.yaml")
    assert first.exit_code == 0, first.output
    again = cli("train", "chain.yaml")
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-1] == "stage.yaml -> runs/tiny: finished before, skipped"

    project({**STAGE, "trainer": {**STAGE["trainer"], "learning_rate": 0.01}})
    edited = cli("train", "chain.yaml")
    assert edited.exit_code == 2, edited.output
    assert edited.stderr.splitlines()[-1] == (
        "error: stage 1/1 (grpo, stage.yaml -> runs/tiny) changed since its run finished: "
        f"trainer.learning_rate (0.05 -> 0.01){HINT}"
    )
    retrained = cli("train", "chain.yaml", "--overwrite")
    assert retrained.exit_code == 0, retrained.output
    assert yaml.safe_load(Path("runs/tiny/recipe.yaml").read_text())["trainer"]["learning_rate"] == 0.01
