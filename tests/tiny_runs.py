"""Run directories as `grpo-cli train` leaves them, made in a second without training (for export, generate and
model-card tests), and a tiny model with a BPE tokenizer and a chat template saved locally (what real users bring).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tests.helpers import TINY_RECIPE

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}={% else %}{{ m['content'] }}+"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}={% endif %}"
)


def write_recipe(directory: Path, changes: dict | None = None) -> Path:
    from grpo_cli.recipe_files import deep_merge

    data = deep_merge(copy.deepcopy(TINY_RECIPE), changes or {})
    data.setdefault("output_dir", str(directory / "runs" / "tiny"))
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fake_run(directory: Path, *, lora: bool = True, chat_template: str | None = None, changes=None) -> Path:
    """A finished run in `directory/run`: base_model/, the tuned adapter (or full model), tokenizer, recipe.yaml,
    summary.json, metrics.jsonl and a checkpoint-2/. Weights are moved well away from a fresh initialisation, so
    greedy completions depend on the prompt and the adapter changes them."""
    import torch
    from peft import get_peft_model

    from grpo_cli import models
    from grpo_cli.recipe import load_recipe

    recipe = load_recipe(write_recipe(directory, {**(changes or {}), **({} if lora else {"lora": None})}))
    run = directory / "run"
    model, tokenizer = models.build_from_config(recipe.model.from_config, recipe.seed)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    model.save_pretrained(run / "base_model")
    for place in (run / "base_model", run, run / "checkpoint-2"):
        tokenizer.save_pretrained(place)
    if lora:
        peft_model = get_peft_model(model, models.lora_config(recipe.lora))
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=1.0)
        peft_model.save_pretrained(run)
        peft_model.save_pretrained(run / "checkpoint-2")
    else:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.5 * torch.randn_like(param))
        model.save_pretrained(run)
        model.save_pretrained(run / "checkpoint-2")
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    (run / "summary.json").write_text(
        json.dumps(
            {"algorithm": "grpo", "steps": 4, "wall_time_s": 3.2, "first_reward": 0.1, "last_reward": 0.9}
        )
    )
    (run / "metrics.jsonl").write_text('{"step": 1, "reward": 0.1}\n{"step": 4, "reward": 0.9}\n')
    return run


def preference_pairs(count: int) -> list[dict]:
    """Pairs a tiny model can learn in a few steps: chosen answers are high digits, rejected ones low."""
    return [
        {"question": f"{i % 10}+{i // 10}=", "chosen": str(5 + i % 5), "rejected": str((i * 3) % 5)}
        for i in range(count)
    ]


REWARD_CHANGES = {
    "algorithm": "reward",
    "rewards": [],
    "dataset": {"source": "pairs.jsonl", "prompt": "{question}", "eval_size": 8},
    "trainer": {"learning_rate": 0.02, "max_steps": 8, "per_device_train_batch_size": 16, "save_steps": 4},
}


def one_label_model(directory: Path) -> Path:
    """A local one-label reward model (a Qwen2 sequence classifier, char tokenizer) saved in `directory`."""
    from grpo_cli import models
    from tests.helpers import tiny_reward_model

    tokenizer = models.char_tokenizer("0123456789+=")
    tiny_reward_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def reward_recipe(directory: Path, *, lora: bool = True) -> Path:
    """A reward recipe in `directory` (with its pairs.jsonl) from the local one-label model in `directory/judge`."""
    (directory / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_pairs(40)))
    judge = one_label_model(directory / "judge")
    data = {**copy.deepcopy(TINY_RECIPE), **REWARD_CHANGES, "model": {"name_or_path": str(judge)}}
    data["output_dir"] = str(directory / "runs" / "rm")
    if not lora:
        data["lora"] = None
    path = directory / "rm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fake_reward_run(directory: Path, *, lora: bool = True) -> Path:
    """A finished reward run in `directory/rm`, as `train` leaves one from a local one-label model (so no
    base_model/): a LoRA adapter of task SEQ_CLS with its score head (peft's modules_to_save), or a full model;
    weights moved away from the start so that the scores differ from the base's."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from grpo_cli import models
    from grpo_cli.recipe import load_recipe

    recipe = load_recipe(reward_recipe(directory, lora=lora))
    run = directory / "rm"
    model = AutoModelForSequenceClassification.from_pretrained(recipe.model.name_or_path, num_labels=1)
    tokenizer = models.load_tokenizer(recipe.model.name_or_path)
    torch.manual_seed(1)
    if lora:
        model = get_peft_model(model, models.lora_config(recipe.lora, task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not lora or "lora_B" in name or "score" in name:
                param.add_(torch.randn_like(param))
    for place in (run, run / "checkpoint-4"):
        model.save_pretrained(place)
        tokenizer.save_pretrained(place)
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    (run / "run.json").write_text(json.dumps({"algorithm": "reward"}))
    (run / "summary.json").write_text(json.dumps({"algorithm": "reward", "steps": 8, "wall_time_s": 1.0}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 8, "loss": 0.4}\n')
    return run


def bpe_model(directory: Path) -> Path:
    """A tiny Qwen2 with the realistic test model's byte-level BPE tokenizer (ChatML template, EOS `<|im_end|>`,
    Qwen2.5's files), saved in `directory`: smaller than `tests.realistic_model`'s policy, for export tests."""
    import torch
    from transformers import Qwen2ForCausalLM

    from tests import realistic_model

    tokenizer = realistic_model.build_tokenizer()
    config = realistic_model.qwen2_config(
        tokenizer,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    realistic_model.save_tokenizer(tokenizer, directory)
    return directory
