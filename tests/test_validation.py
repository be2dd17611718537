"""Checks that need the model in hand (`validation.check_loaded`), and the eval-reward binding both validate and
eval use (`validation.bind_rewards`)."""

from __future__ import annotations

import pytest
import yaml

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


@pytest.fixture
def config_only_model(tmp_path):
    """A local model directory with a config.json and no weights: all validate needs to know its modules."""
    from transformers import Qwen2Config

    directory = tmp_path / "tiny-qwen2"
    Qwen2Config(
        vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(directory)
    return directory


def test_validate_refuses_a_lora_target_the_config_has_no_module_for(tiny_recipe, config_only_model):
    """Issue 23 item 4: known from the model's config.json, without weights; the real CLI, one line, exit 2."""
    import subprocess
    import sys

    recipe = tiny_recipe(
        {
            "model": {"from_config": None, "name_or_path": str(config_only_model)},
            "lora": {"target_modules": ["q_proj", "qproj"]},
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "validate", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "lora.target_modules" in x]
    assert (
        f"lora.target_modules: 'qproj' matches no module of {config_only_model} (qwen2, from its config) "
        "(did you mean 'q_proj'?); its modules: "
    ) in line
    assert line.endswith(
        "down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    )


def test_lora_targets_from_config_regex_reward_model_and_uncached_hub_id(cli, tiny_recipe, config_only_model):
    result = cli("validate", tiny_recipe({"lora": {"target_modules": ["nope"]}}))
    assert result.exit_code == 2
    assert (
        "lora.target_modules: 'nope' matches no module of the qwen2 model built from a config; its modules: "
        in (result.stderr)
    )
    model = {"from_config": None, "name_or_path": str(config_only_model)}
    assert (
        cli("validate", tiny_recipe({"model": model, "lora": {"target_modules": ".*_proj"}})).exit_code == 0
    )
    result = cli("validate", tiny_recipe({"model": model, "lora": {"target_modules": "mlp"}}))
    assert result.exit_code == 2 and "lora.target_modules: 'mlp' matches no module of" in result.stderr
    # A reward model has a score head where a causal LM has lm_head.
    reward = tiny_recipe(
        {"model": model, "lora": {"target_modules": ["score", "q_proj"]}}, name="reward.yaml"
    )
    data = yaml.safe_load(reward.read_text())
    data.update(algorithm="reward", rewards=None, dataset={"source": str(reward.parent / "pairs.jsonl")})
    (reward.parent / "pairs.jsonl").write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n' * 16)
    reward.write_text(yaml.safe_dump(data))
    result = cli("validate", reward)
    assert "lora.target_modules" not in result.stderr, result.stderr
    # Not readable offline (a Hub id not in the cache): nothing to check against, so nothing is said.
    hub = {"from_config": None, "name_or_path": "grpo-cli-tests/not-in-any-cache"}
    result = cli("validate", tiny_recipe({"model": hub, "lora": {"target_modules": ["nope"]}}))
    assert "lora.target_modules" not in result.stderr, result.stderr
