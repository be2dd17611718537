"""Which GRPO loss runs is said (issue 22, item 19): the shipped GRPO recipes state `trainer.loss_type`, and a run
prints TRL's defaults for the fields that decide its algorithm when the recipe leaves them unset."""

from __future__ import annotations

import pytest

from grpo_cli import trainer_fields


def grpo_recipes():
    """The shipped recipe files of algorithm grpo, pipeline stages included, by name (pipeline/grpo)."""
    import yaml

    from grpo_cli._paths import RECIPES_DIR
    from grpo_cli.recipe import load_recipe

    found = {}
    for path in sorted(RECIPES_DIR.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "stages" in data:  # a pipeline file
            continue
        recipe = load_recipe(path)
        if recipe.algorithm == "grpo":
            found[path.relative_to(RECIPES_DIR).with_suffix("").as_posix()] = recipe
    return found


def test_every_shipped_grpo_recipe_states_its_loss_type_as_trls_default():
    recipes = grpo_recipes()
    assert {"addition", "gsm8k-grpo", "gsm8k-dapo", "pipeline/grpo"} <= set(recipes)
    default = trainer_fields.fields("grpo")["loss_type"].default
    assert default == "dapo"  # TRL 1.12; the recipes keep the behaviour they had before they named it
    assert {name: r.trainer.get("loss_type") for name, r in recipes.items()} == dict.fromkeys(
        recipes, default
    )


def test_trl_defaults_in_effect_name_the_deciding_fields_the_recipe_leaves_unset(tiny_recipe):
    from grpo_cli.commands._common import trl_defaults
    from grpo_cli.recipe import load_recipe

    assert trl_defaults(load_recipe(tiny_recipe())) == (
        "TRL defaults in effect (the recipe does not set them): trainer.loss_type: dapo, trainer.beta: 0.0, "
        "trainer.scale_rewards: group"
    )
    partly = tiny_recipe({"trainer": {"loss_type": "grpo", "beta": 0.04}})
    assert trl_defaults(load_recipe(partly)).endswith(": trainer.scale_rewards: group")
    every = tiny_recipe({"trainer": {"loss_type": "grpo", "beta": 0.04, "scale_rewards": "none"}})
    assert trl_defaults(load_recipe(every)) is None


def test_a_grpo_train_names_its_loss_type_on_stderr(tiny_recipe, cli, tmp_path, monkeypatch):
    from grpo_cli.algorithms import grpo

    monkeypatch.setattr(
        grpo, "train", lambda recipe, out, resume_from=None: {}
    )  # no training: what it says first
    result = cli("train", tiny_recipe(), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (
        "TRL defaults in effect (the recipe does not set them): trainer.loss_type: dapo, trainer.beta: 0.0, "
        "trainer.scale_rewards: group\n" in result.stderr
    )
    result = cli("train", tiny_recipe({"trainer": {"loss_type": "dr_grpo"}}), "-o", tmp_path / "run2")
    assert "  loss_type: dr_grpo\n" in result.stderr  # set: the recipe as printed shows it
    assert "trainer.loss_type" not in result.stderr


@pytest.mark.parametrize("algorithm", ["sft", "reward"])
def test_algorithms_without_deciding_fields_listed_print_no_defaults_line(algorithm):
    from types import SimpleNamespace

    from grpo_cli.commands._common import trl_defaults

    assert trl_defaults(SimpleNamespace(algorithm=algorithm, trainer={})) is None
