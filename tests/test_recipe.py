"""Recipe loading: schema, strictness, extends, overrides, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from grpo_cli.errors import UserError
from grpo_cli.recipe import load_recipe
from grpo_cli.recipe_files import apply_overrides, shipped_recipes


def problems_of(path, overrides=()) -> list[str]:
    with pytest.raises(UserError) as info:
        load_recipe(path, list(overrides))
    return info.value.problems or [str(info.value)]


def test_valid_recipe_loads_with_types_and_defaults(tiny_recipe):
    recipe = load_recipe(tiny_recipe())
    assert recipe.algorithm == "grpo"
    assert recipe.model.from_config.hidden_size == 16
    assert recipe.lora.r == 4 and recipe.lora.target_modules == "all-linear"
    assert [r.name for r in recipe.rewards] == ["accuracy", "closeness"]
    assert recipe.rewards[1].weight == 0.5 and recipe.rewards[0].on_error == "fail"
    assert recipe.trainer["max_steps"] == 4


def test_unknown_top_level_key_names_it_and_suggests(tiny_recipe):
    assert problems_of(tiny_recipe({"lorra": {"r": 2}})) == ["lorra: unknown key (did you mean 'lora'?)"]


def test_unknown_nested_key_has_dotted_path(tiny_recipe):
    assert problems_of(tiny_recipe({"lora": {"rr": 8}})) == ["lora.rr: unknown key (did you mean 'r'?)"]


def test_unknown_key_in_list_item(tiny_recipe):
    path = tiny_recipe()
    data = yaml.safe_load(path.read_text())
    data["rewards"][1]["wieght"] = 2
    path.write_text(yaml.safe_dump(data))
    assert problems_of(path) == ["rewards[1].wieght: unknown key (did you mean 'weight'?)"]


def test_unknown_key_without_close_match_lists_valid_keys(tiny_recipe):
    (problem,) = problems_of(tiny_recipe({"dataset": {"zzz": 1}}))
    assert problem.startswith("dataset.zzz: unknown key; valid keys: source, generate, config, split, prompt")


def test_every_problem_is_reported_at_once(tiny_recipe):
    found = problems_of(tiny_recipe({"lora": {"r": -1}, "seed": "x", "trainer": {"learning_rat": 1e-5}}))
    assert len(found) == 3  # a schema error no longer hides the trainer check (issue 11)
    assert any(p.startswith("lora.r: Input should be greater than 0") for p in found)
    assert any(p.startswith("seed: Input should be a valid integer") for p in found)
    assert "trainer.learning_rat: not a field of TRL's GRPOConfig (did you mean 'learning_rate'?)" in found


def test_trainer_keys_are_checked_against_grpo_config(tiny_recipe):
    found = problems_of(tiny_recipe({"trainer": {"learning_rat": 1e-5, "num_generations": "many"}}))
    assert "trainer.learning_rat: not a field of TRL's GRPOConfig (did you mean 'learning_rate'?)" in found
    assert any(p.startswith("trainer.num_generations: expected int | None, got 'many'") for p in found)


def test_trainer_keys_are_checked_against_ppo_config_for_ppo(tiny_recipe):
    found = problems_of(tiny_recipe({"algorithm": "ppo", "trainer": {"num_generations": 4}}))
    assert found[0].startswith("trainer.num_generations: not a field of TRL's PPOConfig")


def test_trainer_keys_we_manage_point_elsewhere(tiny_recipe):
    found = problems_of(tiny_recipe({"trainer": {"output_dir": "x", "reward_weights": [1.0]}}))
    assert "trainer.output_dir: set output_dir at the top level of the recipe" in found
    assert "trainer.reward_weights: give each reward a `weight` in the rewards list" in found


def test_trainer_values_are_coerced(tiny_recipe):
    recipe = load_recipe(tiny_recipe({"trainer": {"learning_rate": "1e-5", "max_steps": 7}}))
    assert recipe.trainer["learning_rate"] == 1e-5


def test_model_needs_exactly_one_source(tiny_recipe):
    (problem,) = problems_of(tiny_recipe({"model": {"name_or_path": "gpt2"}}))
    assert (
        problem
        == "model: give exactly one of model.name_or_path (Hub id or local dir), model.from_config or "
        "model.run (a previous run's directory)"
    )


def test_missing_required_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("algorithm: grpo\nrewards: [{name: accuracy}]\n")
    assert problems_of(path) == ["model: required key is missing", "dataset: required key is missing"]


def test_grpo_needs_a_reward(tiny_recipe):
    assert problems_of(tiny_recipe({"rewards": []})) == [
        "rewards: GRPO needs at least one reward (see `grpo-cli rewards ls`)"
    ]


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algorithm: grpo\nmodel: [unclosed\n")
    with pytest.raises(UserError, match=r"^bad.yaml:3: invalid YAML|bad.yaml:\d+: invalid YAML"):
        load_recipe(path)


def test_missing_recipe_file_and_unknown_name():
    with pytest.raises(UserError, match="recipe file not found: nope.yaml"):
        load_recipe("nope.yaml")
    with pytest.raises(
        UserError, match=r"no recipe file or shipped recipe named 'quikstart' \(did you mean 'quickstart'\?\)"
    ):
        load_recipe("quikstart")


def test_extends_merges_and_resolves_relative_to_the_child(tiny_recipe, tmp_path):
    base = tiny_recipe(name="base.yaml")
    sub = tmp_path / "sub"
    sub.mkdir()
    child = sub / "child.yaml"
    child.write_text("extends: ../base.yaml\nlora: {r: 2}\ntrainer: {max_steps: 9}\n")
    recipe = load_recipe(child)
    assert recipe.lora.r == 2 and recipe.lora.alpha == 8  # merged key by key
    assert recipe.trainer["max_steps"] == 9 and recipe.trainer["num_generations"] == 4
    assert base.exists()


def test_extends_can_remove_a_section_and_detects_loops(tmp_path, tiny_recipe):
    tiny_recipe(name="base.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nlora: null\n")
    assert load_recipe(child).lora is None
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match="recipe extends itself in a loop"):
        load_recipe(a)


def test_extends_missing_parent(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: gone.yaml\n")
    with pytest.raises(UserError, match="extends 'gone.yaml', but .*gone.yaml does not exist"):
        load_recipe(child)


def test_overrides_set_dotted_paths_with_yaml_scalars(tiny_recipe):
    recipe = load_recipe(
        tiny_recipe(),
        [
            "trainer.max_steps=20",
            "lora.r=8",
            "trainer.learning_rate=1e-5",
            "seed=7",
            "dataset.system_prompt=Be brief",
        ],
    )
    assert recipe.trainer["max_steps"] == 20 and recipe.lora.r == 8 and recipe.seed == 7
    assert recipe.trainer["learning_rate"] == 1e-5
    assert recipe.dataset.system_prompt == "Be brief"


def test_override_can_create_and_drop_sections(tiny_recipe):
    assert load_recipe(tiny_recipe(), ["lora=null"]).lora is None
    assert load_recipe(tiny_recipe({"lora": None}), ["lora.r=3"]).lora.r == 3


def test_override_of_unknown_key_is_an_error(tiny_recipe):
    assert problems_of(tiny_recipe(), ["lora.alpah=8"]) == ["lora.alpah: unknown key (did you mean 'alpha'?)"]
    assert problems_of(tiny_recipe(), ["trainer.max_step=8"]) == [
        "trainer.max_step: not a field of TRL's GRPOConfig (did you mean 'max_steps'?)"
    ]


@pytest.mark.parametrize("bad", ["max_steps", "=3", "trainer..x=1", "seed.x=1"])
def test_malformed_overrides(bad):
    with pytest.raises(UserError, match="bad override"):
        apply_overrides({"seed": 1, "trainer": {}}, [bad])


def test_relative_paths_become_absolute(tmp_path, tiny_recipe):
    (tmp_path / "data.jsonl").write_text('{"q": "1+1=", "answer": "2"}\n')
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    path = tiny_recipe(
        {
            "dataset": {"generate": None, "source": "data.jsonl", "prompt": "{q}"},
            "rewards": [{"name": "./my_rewards.py:brevity"}],
        }
    )
    recipe = load_recipe(path)
    assert recipe.dataset.source == str(tmp_path / "data.jsonl")
    assert recipe.rewards[0].name == f"{tmp_path / 'my_rewards.py'}:brevity"
    # The saved recipe reloads from anywhere to the same thing.
    saved = tmp_path / "elsewhere" / "recipe.yaml"
    saved.parent.mkdir()
    saved.write_text(recipe.to_yaml())
    assert load_recipe(saved).model_dump() == recipe.model_dump()


def test_default_output_dir_is_named_after_the_recipe(tiny_recipe):
    path = tiny_recipe()
    data = yaml.safe_load(path.read_text())
    del data["output_dir"]
    path.write_text(yaml.safe_dump(data))
    assert load_recipe(path).output_dir == str(Path("runs") / "tiny")


def test_shipped_recipes_are_found_by_name():
    assert {"quickstart", "addition", "pipeline"} <= set(shipped_recipes())
    assert load_recipe("addition").path == shipped_recipes()["addition"]


# ---- every path resolves against the recipe's directory (issue 10, item 8) ----


def _recipe_elsewhere(tmp_path, monkeypatch, changes: dict):
    """A recipe in tmp_path/project, loaded from tmp_path/elsewhere (the current directory)."""
    from grpo_cli.recipe_files import deep_merge
    from tests.helpers import TINY_RECIPE

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    path = project / "r.yaml"
    path.write_text(yaml.safe_dump(deep_merge(TINY_RECIPE, changes)))
    monkeypatch.chdir(elsewhere)
    return project, elsewhere, path


def _rows(path: Path, count: int) -> None:
    path.write_text("".join(f'{{"question": "{i}+0=", "answer": "{i}"}}\n' for i in range(count)))


def test_eval_split_file_resolves_against_the_recipe_not_the_cwd(tmp_path, monkeypatch):
    from grpo_cli import data

    changes = {
        "dataset": {"generate": None, "source": "train.jsonl", "eval_split": "eval.jsonl", "eval_size": None}
    }
    project, elsewhere, path = _recipe_elsewhere(tmp_path, monkeypatch, changes)
    _rows(project / "train.jsonl", 10)
    _rows(project / "eval.jsonl", 8)
    _rows(elsewhere / "eval.jsonl", 3)  # an unrelated file of the same name in the current directory
    recipe = load_recipe(path)
    assert recipe.dataset.eval_split == str(project / "eval.jsonl")
    _train, held_out = data.load_splits(recipe.dataset, recipe.seed)
    assert len(held_out) == 8
    (project / "eval.jsonl").unlink()
    assert problems_of_validate(path) == [
        f"dataset.eval_split: dataset file not found: {project / 'eval.jsonl'}"
    ]


def problems_of_validate(path) -> list[str]:
    from grpo_cli import validation

    with pytest.raises(UserError) as info:
        validation.validate(str(path))
    return info.value.problems or [str(info.value)]


def test_a_missing_data_file_is_looked_for_next_to_the_recipe(tmp_path, monkeypatch):
    changes = {"dataset": {"generate": None, "source": "data.jsonl", "eval_size": None}}
    project, elsewhere, path = _recipe_elsewhere(tmp_path, monkeypatch, changes)
    _rows(elsewhere / "data.jsonl", 5)  # never read: the recipe's data.jsonl is the one in its own directory
    assert load_recipe(path).dataset.source == str(project / "data.jsonl")
    assert problems_of_validate(path) == [f"dataset file not found: {project / 'data.jsonl'}"]


def test_local_model_and_reward_model_dirs_and_reward_files_resolve_against_the_recipe(tmp_path, monkeypatch):
    changes = {
        "model": {"from_config": None, "name_or_path": "./base"},
        "rewards": [{"name": "./mine.py:brevity"}, {"name": "model:./judge"}, {"name": "judge2"}],
        "eval": {"rewards": [{"name": "sub/more.py:extra"}]},
    }
    project, _elsewhere, path = _recipe_elsewhere(tmp_path, monkeypatch, changes)
    (project / "judge2").mkdir()
    recipe = load_recipe(path)
    assert recipe.model.name_or_path == str(project / "base")
    assert [r.name for r in recipe.rewards] == [
        f"{project / 'mine.py'}:brevity",
        f"model:{project / 'judge'}",
        str(project / "judge2"),
    ]
    assert recipe.eval.rewards[0].name == f"{project / 'sub' / 'more.py'}:extra"


def test_distributed_config_file_resolves_against_the_recipe(tmp_path, monkeypatch):
    project, _elsewhere, path = _recipe_elsewhere(
        tmp_path, monkeypatch, {"distributed": {"config_file": "acc.yaml"}}
    )
    assert load_recipe(path).distributed.config_file == str(project / "acc.yaml")


def test_hub_ids_split_names_and_output_dir_stay_as_written(tmp_path, monkeypatch):
    changes = {
        "model": {"from_config": None, "name_or_path": "Qwen/Qwen2.5-0.5B"},
        "dataset": {"generate": None, "source": "openai/gsm8k", "eval_split": "test", "eval_size": None},
        "output_dir": "runs/mine",
    }
    _project, _elsewhere, path = _recipe_elsewhere(tmp_path, monkeypatch, changes)
    recipe = load_recipe(path)
    assert recipe.model.name_or_path == "Qwen/Qwen2.5-0.5B"
    assert (recipe.dataset.source, recipe.dataset.eval_split) == ("openai/gsm8k", "test")
    assert recipe.output_dir == "runs/mine"  # like -o: relative to where the command runs


def test_saved_recipe_holds_absolute_paths_and_means_the_same_from_anywhere(tmp_path, monkeypatch):
    changes = {
        "dataset": {"generate": None, "source": "train.jsonl", "eval_split": "eval.jsonl", "eval_size": None}
    }
    project, elsewhere, path = _recipe_elsewhere(tmp_path, monkeypatch, changes)
    recipe = load_recipe(path)
    saved = yaml.safe_load(recipe.to_yaml())
    assert saved["dataset"]["source"] == str(project / "train.jsonl")
    assert saved["dataset"]["eval_split"] == str(project / "eval.jsonl")
    (elsewhere / "run").mkdir()
    (elsewhere / "run" / "recipe.yaml").write_text(recipe.to_yaml())
    monkeypatch.chdir(tmp_path)
    assert load_recipe(elsewhere / "run" / "recipe.yaml").model_dump() == recipe.model_dump()


# ---- one YAML reader, one KEY=VALUE parser ----


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("trainer:\n  learning_rate: 1.0e-3\n  max_steps: 3\n  learning_rate: 1.0e-4\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == (
        f"{path}:4: invalid YAML: duplicate key 'learning_rate' (also on line 2): give each key once"
    )


def test_exponent_floats_are_floats_in_files_and_overrides(tiny_recipe):
    from grpo_cli.recipe_files import parse_value

    path = tiny_recipe({"rewards": [{"name": "closeness", "args": {"scale": "PLACEHOLDER"}}]})
    path.write_text(
        path.read_text().replace("PLACEHOLDER", "5e-1").replace("learning_rate: 0.05", "learning_rate: 1e-5")
    )
    recipe = load_recipe(path)
    assert recipe.rewards[0].args == {"scale": 0.5}  # a float, not the string "5e-1"
    assert recipe.trainer["learning_rate"] == 1e-5
    assert [parse_value(v) for v in ("1e-5", "5E+1", ".5e1", "7", "x", "", "[1, 2]", "1e")] == [
        1e-5,
        50.0,
        5.0,
        7,
        "x",
        None,
        [1, 2],
        "1e",
    ]


def test_parse_assignment_is_the_one_key_value_parser():
    from grpo_cli.recipe_files import parse_assignment

    assert parse_assignment("trainer.learning_rate=3e-4") == ("trainer.learning_rate", 3e-4)
    assert parse_assignment("scale=5e-1", what="--arg", example="scale=2") == ("scale", 0.5)
    with pytest.raises(
        UserError, match=r"^bad --arg 'scale': write KEY=VALUE with a dotted key, e.g. scale=2$"
    ):
        parse_assignment("scale", what="--arg", example="scale=2")
