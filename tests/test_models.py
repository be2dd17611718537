"""Models and tokenizers: built from a config offline, loaded from a local directory, LoRA, precision."""

from __future__ import annotations

import pytest

from grpo_cli import devices, generation, models
from grpo_cli.errors import UserError
from grpo_cli.recipe import FromConfig, LoraSection, ModelSection


def test_char_tokenizer_round_trips_and_pad_differs_from_eos():
    tok = models.char_tokenizer("0123456789+=")
    ids = tok("12+3=")["input_ids"]
    assert len(ids) == 5
    assert tok.decode(ids) == "12+3="
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    batch = tok(["1+1=", "10+10="], padding=True)["input_ids"]
    assert batch[0][:2] == [tok.pad_token_id] * 2  # left padding for generation


def test_build_from_config_is_deterministic_per_seed():
    spec = FromConfig(vocabulary="0123456789+=", hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    a, tok = models.build_from_config(spec, seed=1)
    b, _ = models.build_from_config(spec, seed=1)
    c, _ = models.build_from_config(spec, seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert (pa == pb).all() and not (pa == pc).all()
    assert a.config.vocab_size == len(tok) == 15
    assert a.generation_config.eos_token_id == tok.eos_token_id


def test_bad_model_type_is_a_user_error():
    spec = FromConfig(model_type="nosuchmodel", vocabulary="01")
    with pytest.raises(UserError, match="model.from_config: cannot build a 'nosuchmodel' config"):
        models.build_from_config(spec, seed=0)


def test_from_pretrained_path_loads_a_saved_model(tmp_path):
    """The real Hub loading path, against a model saved locally (nothing here reaches a hub)."""
    spec = FromConfig(vocabulary="0123456789+=", hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    built, tok = models.build_from_config(spec, seed=0)
    built.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, tokenizer = models.load_model(ModelSection(name_or_path=str(tmp_path / "m")), seed=0)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == tok.pad_token_id
    assert (next(model.parameters()) == next(built.parameters())).all()


def test_a_reward_model_from_a_saved_causal_lm_gets_the_same_fresh_head_per_seed(tmp_path):
    """A reward run from a causal LM by name_or_path: its score head is not in the files, so from_pretrained
    initialises it. Unseeded, `eval --baseline` (which loads the start again) scored another random head than the
    one the run started from."""
    import torch

    spec = FromConfig(vocabulary="0123456789+=", hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    built, tok = models.build_from_config(spec, seed=0)
    built.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    saved = ModelSection(name_or_path=str(tmp_path / "m"))
    heads = [models.load_reward_model_for_training(saved, seed)[0].score.weight for seed in (0, 0, 1)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_a_model_that_cannot_be_loaded_is_one_actionable_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"cannot load tokenizer '.*empty': .*check that the directory holds"):
        models.load_model(ModelSection(name_or_path=str(tmp_path / "empty")), seed=0)
    # The tests run offline (conftest): the hint says so instead of telling the user to set what is set.
    with pytest.raises(
        UserError,
        match=r"cannot load tokenizer 'no-such-org/no-such-model'.*\(HF_HUB_OFFLINE is set, so only models already "
        r"in the Hugging Face cache load: download it once with the network on \(`hf download no-such-org/",
    ):
        models.load_model(ModelSection(name_or_path="no-such-org/no-such-model"), seed=0)


@pytest.mark.parametrize(
    ("environment", "hint"),
    [
        ({}, "offline: set HF_HUB_OFFLINE=1 and use a cached model"),
        (
            {"HF_HUB_OFFLINE": "1"},
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache load",
        ),
        ({"HF_HUB_OFFLINE": "0"}, "offline: set HF_HUB_OFFLINE=1 and use a cached model"),
        ({"TRANSFORMERS_OFFLINE": "yes"}, "TRANSFORMERS_OFFLINE is set, so only models already in the"),
    ],
)
def test_the_load_failure_hint_follows_the_offline_setting(monkeypatch, environment, hint):
    for name in models.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    message = models.load_failure("model", "acme/nothing", OSError("We couldn't connect to the Hub"))
    assert message.startswith("cannot load model 'acme/nothing': We couldn't connect to the Hub (")
    assert hint in message


def test_missing_pad_token_prefers_unk_over_eos(tmp_path):
    tok = models.char_tokenizer("ab")
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "t")
    loaded = models.load_tokenizer(str(tmp_path / "t"))
    assert loaded.pad_token == models.UNK != loaded.eos_token


def test_lora_config_from_recipe():
    config = models.lora_config(LoraSection(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.1)
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert models.lora_config(LoraSection()).target_modules == "all-linear"


def test_precision_follows_hardware_unless_set():
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cuda = torch.cuda.is_available()
    assert devices.hardware_defaults({}) == {
        "bf16": bf16,
        "fp16": False,
        "dataloader_pin_memory": cuda,
        "use_cpu": not cuda,
    }
    assert devices.hardware_defaults({"bf16": True, "dataloader_pin_memory": True, "use_cpu": False}) == {}
    assert devices.torch_dtype("float16") == torch.float16
    assert devices.torch_dtype("auto") == (torch.bfloat16 if bf16 else torch.float32)


def test_pad_and_unk_are_kept_out_of_generation_unless_they_end_it():
    tok = models.char_tokenizer("0123456789")
    assert generation.suppressed_special_tokens(tok) == {
        "suppress_tokens": [tok.pad_token_id, tok.unk_token_id]
    }
    tok.pad_token = tok.eos_token
    assert generation.suppressed_special_tokens(tok) == {"suppress_tokens": [tok.unk_token_id]}

    from types import SimpleNamespace

    model = SimpleNamespace(
        generation_config=SimpleNamespace(eos_token_id=[tok.eos_token_id, tok.unk_token_id])
    )
    assert generation.eos_ids(model, tok) == [tok.eos_token_id, tok.unk_token_id]
    assert generation.suppressed_special_tokens(tok, generation.eos_ids(model, tok)) == {}


def test_grpo_config_suppresses_pad_and_keeps_the_recipes_generation_kwargs(tiny_recipe, tmp_path):
    from grpo_cli.algorithms import grpo
    from grpo_cli.recipe import load_recipe

    tok = models.char_tokenizer("0123456789+=")
    recipe = load_recipe(tiny_recipe({"trainer": {"generation_kwargs": {"no_repeat_ngram_size": 2}}}))
    config = grpo.config(recipe, tmp_path / "out", tok)
    suppressed = [tok.pad_token_id, tok.unk_token_id]
    assert config.generation_kwargs == {"suppress_tokens": suppressed, "no_repeat_ngram_size": 2}
    assert config.reward_weights == [1.0, 0.5] and config.logging_steps == 1 and config.report_to == []


def test_the_model_is_named_as_the_recipe_names_it():
    assert models.label(ModelSection(name_or_path="Qwen/Qwen2.5-0.5B")) == "Qwen/Qwen2.5-0.5B"
    assert (
        models.label(ModelSection(from_config=FromConfig(vocabulary="0123456789")))
        == "qwen2 built from a config"
    )
    assert models.label(ModelSection(run="runs/sft")) == "from the run runs/sft"  # was "None"


def test_a_saved_model_without_a_tokenizer_on_a_run_gets_the_runs_tokenizer(tmp_path):
    """`load_source` of a saved model that has no tokenizer takes its base's: for a recipe whose model is
    `model: {run: DIR}`, the run's (a drifted copy of policy_tokenizer used to miss model.run)."""
    from grpo_cli.model_sources import ModelSource
    from grpo_cli.recipe import load_recipe
    from tests.tiny_runs import CHAT_TEMPLATE, fake_run

    run = fake_run(
        tmp_path, chat_template=CHAT_TEMPLATE
    )  # the run's tokenizer, unlike a fresh one, has a template
    recipe = load_recipe(tmp_path / "tiny.yaml")
    model, _ = models.build_from_config(recipe.model.from_config, recipe.seed)
    model.save_pretrained(tmp_path / "saved")  # weights and config.json, no tokenizer files
    recipe = recipe.model_copy(update={"model": ModelSection(run=str(run))})
    source = ModelSource("model", path=tmp_path / "saved", base=ModelSource("recipe", spec=recipe.model))
    _, tokenizer = models.load_source(source, recipe)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.get_vocab() == models.policy_tokenizer(recipe.model).get_vocab()
