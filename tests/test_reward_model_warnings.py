"""Loading a reward model prints nothing the user cannot act on: transformers' deprecation warnings that peft
triggers while grpo-cli loads a reward run's LoRA adapter are silenced there, and only there."""

from __future__ import annotations

import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from tests.tiny_runs import bpe_model


@pytest.fixture(scope="module")
def lora_reward_run(tmp_path_factory) -> Path:
    """A reward run as `train` leaves one with LoRA: base_model/ (a one-label classifier), the adapter with its
    score head, the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path_factory.mktemp("rm")
    source = bpe_model(run / "causal")
    tokenizer = AutoTokenizer.from_pretrained(source)
    base = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    base.save_pretrained(run / "base_model")
    tokenizer.save_pretrained(run / "base_model")
    torch.manual_seed(0)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    get_peft_model(base, config).save_pretrained(run)
    tokenizer.save_pretrained(run)
    return run


def test_loading_a_lora_reward_run_warns_nothing(lora_reward_run):
    import torch

    from grpo_cli.reward_models import RewardModelScore

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = RewardModelScore(str(lora_reward_run), torch.float32, "cpu")
        assert len(score(["1+1="], ["2"])) == 1
    assert [str(w.message) for w in caught] == []


@pytest.mark.skipif(
    Version(version("transformers")) < Version("5.24"),
    reason="the deprecation was seen with transformers 5.24 and peft 0.21; older pairs (the floors) do not warn",
)
def test_the_silenced_warning_is_still_there_to_silence(lora_reward_run, monkeypatch):
    # If a release stops warning, the filter is dead code: this says so (loading with the filter taken out).
    import contextlib

    import torch

    from grpo_cli import models

    monkeypatch.setattr(models, "quiet_deprecations", contextlib.nullcontext)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models.load_reward_model(lora_reward_run, torch.float32)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert any("is_gradient_checkpointing" in m for m in messages), messages


def test_other_warnings_still_show():
    from grpo_cli.models import quiet_deprecations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a user's -W default would be
        with quiet_deprecations():
            warnings.warn(
                "`is_gradient_checkpointing` is deprecated and will be removed", FutureWarning, stacklevel=1
            )
            warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
            warnings.warn(
                "`is_gradient_checkpointing` is deprecated, says grpo-cli", UserWarning, stacklevel=1
            )
    assert [str(w.message) for w in caught] == [
        "something else is deprecated",
        "`is_gradient_checkpointing` is deprecated, says grpo-cli",
    ]
