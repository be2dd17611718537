"""What more than one test module uses: the tiny recipes, reward-file helpers, probes of a run and of stderr.

Test modules import from here (and take conftest's fixtures), never from each other. Heavy imports stay inside
the functions, so that importing this module costs nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

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


# TINY_RECIPE as PPO: one completion per prompt, so PPO's own trainer settings instead of GRPO's.
PPO_RECIPE = {
    **TINY_RECIPE,
    "algorithm": "ppo",
    "trainer": {
        "learning_rate": 0.05,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "response_length": 2,
        "num_ppo_epochs": 2,
        "save_steps": 2,
    },
}


def phase_names(stderr: str) -> list[str]:
    """The steps a command announced on stderr (`grpo_cli.output`), without their times."""
    return [m.group(1) for m in re.finditer(r"^(.+) \.\.\. \d+\.\d s$", stderr, re.MULTILINE)]


def heavy_modules_after(code: str) -> list[str]:
    """Which of torch, trl, transformers, peft, datasets and matplotlib a fresh Python has imported after `code`."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'trl', 'transformers', 'peft', 'datasets', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return eval(out.strip().splitlines()[-1])


# ---- reward files ----


def write(path: Path, text: str) -> Path:
    """Write dedented `text` to `path` (its directories made); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def bind(name: str, **fields):
    """Bind the reward `name` (with RewardEntry `fields`) as the recipe's first reward."""
    from grpo_cli import reward_binding
    from grpo_cli.recipe import RewardEntry

    return reward_binding.bind(RewardEntry(name=name, **fields), "rewards[0]")


def call(name: str, completions, prompts=None, **fields):
    """Score through scoring.RewardCall.score, as training does; returns (scores, errors)."""
    from grpo_cli import scoring

    prompts = prompts if prompts is not None else ["P"] * len(completions)
    columns = fields.pop("columns", {})
    return scoring.RewardCall(bind(name, **fields)).score(prompts, completions, columns)


# ---- a trained run ----


def run_recipe(run: Path):
    """The recipe of a run, or of the run a checkpoint-N belongs to."""
    from grpo_cli.recipe import load_recipe

    return load_recipe((run if (run / "recipe.yaml").is_file() else run.parent) / "recipe.yaml")


def held_out_prompt_ids(run: Path, tokenizer) -> list[list[int]]:
    """The token ids of a run's held-out prompts, as eval builds them."""
    from grpo_cli import prompting
    from grpo_cli.workflows.evaluate_generations import held_out_rows

    recipe = run_recipe(run)
    rows = prompting.prepare(held_out_rows(recipe, None), recipe.dataset, tokenizer)
    return prompting.tokenize_prompts(tokenizer, list(rows["prompt"]))


def eval_completions(run: Path) -> tuple[list[str], list[list[int]]]:
    """Greedy completions of the run's held-out prompts, generated as `grpo-cli eval --adapter RUN` does."""
    from grpo_cli import generation, model_sources, models

    recipe = run_recipe(run)
    tuned, _ = model_sources.resolve_models(recipe, adapter=run, model=None)
    model, tokenizer = models.load_source(tuned, recipe)
    prompt_ids = held_out_prompt_ids(run, tokenizer)
    samples = generation.generate(model, tokenizer, prompt_ids, generation.sampling_settings(recipe, 1), 8)
    return [group[0].text for group in samples], prompt_ids


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


def tool_bpe_model(directory):
    """The realistic BPE chat model (tests/realistic_model.py), tiny, with room for TRL's qwen2_5 tool prompt (about
    640 tokens): TRL drops a tool result, silently, once the sequence reaches max_position_embeddings."""
    import torch
    from transformers import Qwen2ForCausalLM

    from tests import realistic_model

    tokenizer = realistic_model.build_tokenizer()
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = realistic_model.qwen2_config(
        tokenizer, num_key_value_heads=1, max_position_embeddings=2048, **sizes
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    tokenizer.model_max_length = 2048
    realistic_model.save_tokenizer(tokenizer, directory)
    return directory


# ---- checkpoints ----


def make_checkpoint(run: Path, step: int, *, lora: bool = True, value_model: bool = False) -> Path:
    """A checkpoint-N holding what the trainers write, in their formats (tiny tensors)."""
    import json
    import os
    import random

    import numpy as np
    import torch
    from safetensors.torch import save_file

    checkpoint = run / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if lora:
        (checkpoint / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        save_file({"lora_A.weight": torch.zeros(4, 16)}, checkpoint / "adapter_model.safetensors")
    else:
        (checkpoint / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
        save_file({"lm_head.weight": torch.zeros(12, 16)}, checkpoint / "model.safetensors")
    if value_model:
        (checkpoint / "value_model").mkdir()
        (checkpoint / "value_model" / "config.json").write_text(json.dumps({"num_labels": 1}))
        save_file({"score.weight": torch.zeros(1, 16)}, checkpoint / "value_model" / "model.safetensors")
    adam = {
        "state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.zeros(4)}},
        "param_groups": [{"lr": 0.1}],
    }
    torch.save(adam, checkpoint / "optimizer.pt")
    torch.save({"last_epoch": step, "_last_lr": [0.1]}, checkpoint / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, checkpoint / "rng_state.pth")
    # TrainingArguments are a full pickle that resuming never loads: not a reason to skip a checkpoint.
    torch.save({"args": os.path.join}, checkpoint / "training_args.bin")
    return checkpoint
