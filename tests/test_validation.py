"""Checks that need the model in hand (`validation.check_loaded`), and the eval-reward binding both validate and
eval use (`validation.bind_rewards`)."""

from __future__ import annotations

import pytest

from grpo_cli import validation
from grpo_cli.recipe import load_recipe


@pytest.fixture(scope="module")
def tiny_model():
    from grpo_cli.models import build_from_config
    from grpo_cli.recipe import FromConfig

    spec = FromConfig(vocabulary="0123456789+=", hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    return build_from_config(spec, seed=0)


def test_lora_targets_that_match_nothing(tiny_recipe, tiny_model):
    model, tokenizer = tiny_model
    recipe = load_recipe(tiny_recipe({"lora": {"target_modules": ["q_proj", "q_pro"]}}))
    (problem,) = validation.check_loaded(recipe, model, tokenizer)
    assert problem.startswith(
        "lora.target_modules: 'q_pro' matches no module of the model (did you mean 'q_proj'?); its modules: "
    )
    assert "v_proj" in problem
    recipe = load_recipe(tiny_recipe({"lora": {"target_modules": ".*attn\\.(q|k)_proj"}}))
    assert validation.check_loaded(recipe, model, tokenizer) == []
    recipe = load_recipe(tiny_recipe({"lora": {"target_modules": "nothing"}}))
    assert validation.check_loaded(recipe, model, tokenizer)[0].startswith(
        "lora.target_modules: 'nothing' matches no module of the model; its modules: "
    )


def test_a_chat_template_that_fails_is_one_line(tiny_recipe, tiny_model):
    import copy

    model, tokenizer = tiny_model
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = "{{ raise_exception('no system role') }}"
    recipe = load_recipe(tiny_recipe())
    rows = [{"question": "1+1=", "answer": "2"}] * 2  # a whole GRPO batch: 8 completions / 4 per prompt
    assert validation.check_loaded(recipe, model, tokenizer, rows) == [
        "dataset: the tokenizer's chat template fails on the first prompt (TemplateError: no system role); "
        "fix the template or set dataset.chat_template: false"
    ]
    recipe = load_recipe(tiny_recipe({"dataset": {"chat_template": False}}))
    assert validation.check_loaded(recipe, model, tokenizer, rows) == []


def test_eval_rewards_are_bound_once_for_validate_and_eval(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("extends: addition\neval: {rewards: [{name: accuracy}, {name: format}]}\n")
    binding = validation.bind_rewards(load_recipe(path))
    assert [r.name for r in binding.training] == ["accuracy", "digits", "closeness"]
    assert [r.name for r in binding.eval_only] == ["format"]
    assert binding.labels == ["rewards[0]", "rewards[1]", "rewards[2]", "eval.rewards[1]"]
    assert binding.problems == [
        "eval.rewards[0] (accuracy) is already a training reward, whose metrics eval reports anyway: "
        "remove it from eval.rewards"
    ]
