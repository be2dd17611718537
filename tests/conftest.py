"""Shared fixtures: a tiny offline recipe, and running the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY_RECIPE = {
    "algorithm": "grpo",
    "seed": 0,
    "model": {
        "from_config": {
            "model_type": "qwen2",
            "vocabulary": "0123456789+=",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        }
    },
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "dataset": {"generate": {"task": "addition", "size": 40}, "prompt": "{question}", "eval_size": 8},
    "rewards": [{"name": "accuracy"}, {"name": "closeness", "weight": 0.5}],
    "trainer": {
        "learning_rate": 0.05,
        "max_steps": 4,
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 2,
        "save_steps": 2,
    },
}


@pytest.fixture
def tiny_recipe(tmp_path):
    """Write a tiny GRPO recipe (with optional deep-merged changes) into tmp_path; return its path."""
    from grpo_cli.recipe import deep_merge

    def write(changes: dict | None = None, name: str = "tiny.yaml") -> Path:
        data = deep_merge(TINY_RECIPE, changes or {})
        data.setdefault("output_dir", str(tmp_path / "runs" / Path(name).stem))
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli():
    """Run `grpo-cli ARGS...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from grpo_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def tiny_reward_model(tokenizer, seed: int = 0):
    """A randomly initialised one-label Qwen2 sequence-classification model for `tokenizer` (a reward model)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    return Qwen2ForSequenceClassification(Qwen2Config(**settings))
