"""The trainer field table used by `validate` must agree with the installed TRL and transformers where it matters
(regenerate: python -m grpo_cli.algorithms.fields_table).

Only what validate reads is compared: each field's name, type (its choices included) and default. TRL is pinned, so
the fields its configs declare must match always. They inherit transformers' TrainingArguments, whose fields move
with every transformers release (5.6, the floor, lacks fields 5.24 has): those are compared in full only against
the transformers the table was generated with, and otherwise only the ones grpo-cli itself sets or reads, so a
fresh install with a newer (or the oldest supported) transformers fails only when something grpo-cli uses moved.
Help texts never count.
"""

import dataclasses
import json
import re
from importlib.metadata import version

import pytest

from grpo_cli import trainer_fields
from grpo_cli.algorithms import fields_table
from grpo_cli.algorithms.table import ALGORITHMS, TRAINER_DEFAULTS

REGENERATE = "run `python -m grpo_cli.algorithms.fields_table`"
TABLE = json.loads(trainer_fields.TABLE_PATH.read_text())
SAME_TRANSFORMERS = TABLE["transformers_version"] == version("transformers")
OTHER_TRANSFORMERS = (
    f"the table is from transformers {TABLE['transformers_version']}, {version('transformers')} is installed"
)


def _validated(table: dict) -> dict:
    """algorithm -> field -> (type, default): what validate checks a recipe's `trainer:` against."""
    return {
        algorithm: {
            name: (spec["type"], spec["default"]) for name, spec in table[algorithm]["fields"].items()
        }
        for algorithm in ALGORITHMS
    }


@pytest.fixture(scope="module")
def installed() -> dict:
    return _validated(json.loads(json.dumps(fields_table.generate())))


def _drift(installed: dict, names: dict[str, set[str]]) -> list[str]:
    shipped = _validated(TABLE)
    return [
        f"{algorithm}.{name}: table {shipped[algorithm].get(name)}, installed {installed[algorithm].get(name)}"
        for algorithm in shipped
        for name in sorted(names[algorithm])
        if shipped[algorithm].get(name) != installed[algorithm].get(name)
    ]


def _inherited() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments)}


def _used_by_grpo_cli() -> set[str]:
    """The trainer fields grpo-cli sets (its defaults) or reads by name (`value`/`mapping(recipe, "name")`)."""
    from pathlib import Path

    import grpo_cli

    source = "".join(p.read_text() for p in Path(grpo_cli.__file__).parent.rglob("*.py"))
    read = set(re.findall(r"(?:value|mapping)\(recipe, \"(\w+)\"\)", source))
    own = {key for algorithm in ALGORITHMS.values() for key in getattr(algorithm.module(), "DEFAULTS", {})}
    return read | own | set(TRAINER_DEFAULTS)


def test_the_fields_trl_declares_match_the_table(installed):
    inherited = _inherited()  # the installed transformers' TrainingArguments
    names = {a: {n for n in installed[a] if n not in inherited} for a in ALGORITHMS}
    drift = _drift(installed, names)
    assert not drift, f"trainer_fields.json drifted from the installed TRL ({REGENERATE}):\n" + "\n".join(
        drift
    )


def test_the_fields_grpo_cli_sets_or_reads_match_the_table(installed):
    used = _used_by_grpo_cli()
    assert {
        "per_device_train_batch_size",
        "max_steps",
        "logging_steps",
        "temperature",
    } <= used  # the scan works
    names = {a: {n for n in used if n in _validated(TABLE)[a] or n in installed[a]} for a in ALGORITHMS}
    drift = _drift(installed, names)
    assert not drift, "fields grpo-cli uses moved in the installed TRL or transformers:\n" + "\n".join(drift)


@pytest.mark.skipif(not SAME_TRANSFORMERS, reason=OTHER_TRANSFORMERS)
def test_every_field_matches_the_transformers_the_table_was_made_with(installed):
    names = {a: _validated(TABLE)[a].keys() | installed[a].keys() for a in ALGORITHMS}
    drift = _drift(installed, names)
    assert not drift, f"trainer_fields.json drifted ({REGENERATE}):\n" + "\n".join(drift)


def test_the_model_types_of_the_shipped_recipes_are_buildable():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from grpo_cli.recipe_files import load_yaml, shipped_recipes

    shipped = {p for p in shipped_recipes().values()}
    shipped |= set(next(iter(shipped)).parent.glob("*/*.yaml"))
    used = set()
    for path in shipped:
        data = load_yaml(path)
        spec = (data.get("model") or {}).get("from_config") if isinstance(data, dict) else None
        if spec:
            used.add(spec.get("model_type", "qwen2"))
    assert used and used <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) & set(
        trainer_fields.causal_lm_model_types()
    )


@pytest.mark.skipif(not SAME_TRANSFORMERS, reason=OTHER_TRANSFORMERS)
def test_every_model_type_validate_accepts_is_buildable():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    gone = sorted(set(trainer_fields.causal_lm_model_types()) - set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))
    assert not gone, (
        f"validate accepts model types the installed transformers cannot build ({REGENERATE}): {gone}"
    )


def test_check_value_coerces_and_explains():
    fields = trainer_fields.fields("grpo")
    assert trainer_fields.check_value(fields["learning_rate"], "1e-5") == (1e-5, None)
    assert trainer_fields.check_value(fields["num_generations"], None) == (None, None)
    _value, problem = trainer_fields.check_value(fields["max_steps"], 1.5)
    assert problem.startswith("expected int, got 1.5")
    assert trainer_fields.check_value(fields["lr_scheduler_type"], "cosine")[1] is None


def test_whole_numbers_stay_ints_in_fields_trl_types_float(tiny_recipe):
    """TRL types save_steps, logging_steps and eval_steps `float`: `save_steps: 3` must not print as 3.0."""
    from grpo_cli.recipe import load_recipe

    fields = trainer_fields.fields("grpo")
    for key, given in [("save_steps", 3), ("eval_steps", 2), ("learning_rate", 1), ("save_steps", 0.5)]:
        coerced, problem = trainer_fields.check_value(fields[key], given)
        assert (coerced, type(coerced), problem) == (given, type(given), None), key
    assert trainer_fields.check_value(fields["save_steps"], "3") == (
        3.0,
        None,
    )  # text is still read as a number
    recipe = load_recipe(tiny_recipe({"trainer": {"save_steps": 3, "logging_steps": 0.5}}))
    assert "save_steps: 3\n" in recipe.to_yaml() and "logging_steps: 0.5\n" in recipe.to_yaml()


def test_value_gives_the_recipe_value_or_trls_default(tiny_recipe):
    from grpo_cli.recipe import load_recipe

    recipe = load_recipe(tiny_recipe({"trainer": {"generation_kwargs": '{"top_k": 3}'}}))
    assert trainer_fields.value(recipe, "max_steps") == 4  # the recipe's
    assert trainer_fields.value(recipe, "temperature") == 1.0  # GRPOConfig's default
    assert trainer_fields.mapping(recipe, "generation_kwargs") == {"top_k": 3}  # JSON text read as a mapping
    recipe.algorithm = "ppo"
    assert trainer_fields.value(recipe, "temperature") == 0.7  # PPOConfig's default


def test_check_section_names_the_other_algorithms_name():
    _coerced, problems = trainer_fields.check_section("ppo", {"max_completion_length": 8, "beta": 0.1})
    assert problems == [
        "trainer.max_completion_length: not a field of TRL's PPOConfig (PPO's name for it is response_length)",
        "trainer.beta: not a field of TRL's PPOConfig (PPO's KL coefficient is kl_coef)",
    ]
    _coerced, problems = trainer_fields.check_section("grpo", {"response_length": 8})
    assert problems == [
        "trainer.response_length: not a field of TRL's GRPOConfig (GRPO's name for it is max_completion_length)"
    ]


def test_enum_backed_fields_take_only_their_names():
    fields = trainer_fields.fields("grpo")
    assert trainer_fields.check_value(fields["lr_scheduler_type"], "cosine") == ("cosine", None)
    _value, problem = trainer_fields.check_value(fields["optim"], "adam")
    assert problem.startswith("expected Literal['adamw_torch', ")


def test_check_ranges_refuses_what_trl_refuses_or_crashes_on():
    assert trainer_fields.check_ranges(
        {
            "learning_rate": float("nan"),
            "per_device_train_batch_size": 0,
            "save_steps": 0.5,  # a fraction of the run: fine
            "logging_steps": 2.5,
            "top_p": 1.5,
            "max_steps": 2**70,
            "temperature": 0.0,
            "num_generations": 4,
        }
    ) == [
        "trainer.learning_rate: must be a finite number, got nan",
        "trainer.per_device_train_batch_size: must be at least 1, got 0",
        "trainer.logging_steps: a whole number of steps above 1 (below 1: a fraction of the run), got 2.5",
        "trainer.top_p: must be at most 1, got 1.5",
        f"trainer.max_steps: {2**70} is too large (TRL and torch take 64-bit integers)",
        "trainer.temperature: must be above 0, got 0.0",
    ]


def test_causal_lm_model_types_come_from_the_table():
    types = trainer_fields.causal_lm_model_types()
    assert {"qwen2", "llama", "gpt2"} <= set(types) and "bert-base" not in types
