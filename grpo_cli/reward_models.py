"""Reward models as rewards: a sequence classifier's score of prompt + completion, read as TRL reads it.

`load_reward_models` turns every `model:` reward into a callable `RewardModelScore`, so that from then on a reward
model is scored like a function (`scoring`): on the policy's device, batched, with the text TRL's GRPOTrainer
gives reward models (prompt + completion; the reward tokenizer's chat template for chat prompts). Reward runs
train on the same text (`tokenize_pairs`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from grpo_cli import reward_binding
from grpo_cli.devices import default_device
from grpo_cli.errors import UserError
from grpo_cli.output import warn_once
from grpo_cli.run_files import run_kind


class RewardModelScore:
    """A sequence-classification reward model as a reward function: its score of prompt + completion.

    The text is built as TRL 1.12's GRPOTrainer builds it for reward models: concatenated for text prompts,
    through the reward tokenizer's chat template (with `chat_template_kwargs`) for chat prompts; right-padded, no
    special tokens added; the whole batch in one forward pass.
    """

    def __init__(
        self,
        path: str,
        dtype,
        device=None,
        chat_template_kwargs: dict | None = None,
        trust_remote_code: bool = False,
    ):
        from grpo_cli import models

        self.path = path
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        # A saved model, or a reward run's LoRA adapter merged into its base; pad_token_id set from the tokenizer.
        self.model, self.tokenizer = models.load_reward_model(
            path, dtype, trust_remote_code=trust_remote_code
        )
        if self.tokenizer.pad_token_id is None:
            raise UserError(
                f"reward model {path}: its tokenizer has no pad token, nor an unk or EOS token to pad with"
            )
        self.model.requires_grad_(False).eval().to(device or default_device())
        # A reward run renders its pairs without chat_template_kwargs (RewardConfig has none): whether GRPO's change
        # what it reads depends on the template (Qwen3's reads enable_thinking only for the generation prompt, which
        # is not scored), so the first conversation scored is rendered both ways (`texts`).
        self._compare_kwargs = bool(self.chat_template_kwargs) and run_kind(Path(path)) == "reward model"

    def texts(self, prompts: list, completions: list) -> list[str]:
        """What the model reads for each completion (see the class docstring)."""
        texts = reward_model_texts(self.tokenizer, prompts, completions, self.chat_template_kwargs)
        if self._compare_kwargs and texts:
            self._compare_kwargs = False
            if reward_model_texts(self.tokenizer, prompts[:1], completions[:1]) != texts[:1]:
                warn_once(
                    f"reward model {self.path}: trainer.chat_template_kwargs {self.chat_template_kwargs} change "
                    "what its chat template renders, but its reward run rendered its pairs without them, so it "
                    "scores text unlike what it was trained on"
                )
        return texts

    def __call__(self, prompts: list, completions: list, **_columns: Any) -> list[float]:
        import torch

        if not completions:
            return []
        inputs = self.tokenizer(
            text=self.texts(prompts, completions),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,
        ).to(self.model.device)
        with torch.inference_mode():
            return self.model(**inputs).logits[:, 0].float().tolist()


def reward_model_texts(tokenizer, prompts: list, completions: list, chat_template_kwargs: dict | None = None):
    """What a reward model reads for each (prompt, completion): `RewardModelScore` scores these texts, and reward
    runs train on them (tokenized without special tokens), so a model is trained on what it will score."""
    from trl.data_utils import apply_chat_template

    if prompts and isinstance(prompts[0], list):
        return [
            apply_chat_template({"messages": p + c}, tokenizer, **(chat_template_kwargs or {}))["text"]
            for p, c in zip(prompts, completions, strict=True)
        ]
    return [p + c for p, c in zip(prompts, completions, strict=True)]


def load_reward_models(
    bound: list[reward_binding.BoundReward],
    dtype: str = "auto",
    device=None,
    chat_template_kwargs: dict | None = None,
    trust_remote_code: bool = False,
) -> list[reward_binding.BoundReward]:
    """`bound` with every reward model loaded as a `RewardModelScore`, so that each one has a callable `fn`.

    `dtype` is a recipe's `model.dtype` (the policy's precision); `device` defaults to `devices.default_device()`;
    `trust_remote_code` is the recipe's `model.trust_remote_code` (False without a recipe): always passed, so that
    transformers never asks on the terminal whether to run a model's code.
    """
    if all(b.fn is not None for b in bound):
        return list(bound)  # nothing to load: no torch import for rewards that are plain functions
    from grpo_cli.devices import torch_dtype
    from grpo_cli.output import phase

    loaded = []
    for b in bound:
        if b.fn is None:
            with phase(f"loading reward model {b.model_path}"):
                b = dataclasses.replace(
                    b,
                    fn=RewardModelScore(
                        b.model_path, torch_dtype(dtype), device, chat_template_kwargs, trust_remote_code
                    ),
                )
        loaded.append(b)
    return loaded


def tokenize_pairs(rows, tokenizer):
    """Rows from `prompting.prepare_preferences` (chat or text on both sides, as GRPO and PPO will score them) -> TRL's
    processed format (`chosen_ids`, `rejected_ids`): the text a `model:` reward reads, tokenized as it tokenizes
    it. No chat_template_kwargs: RewardConfig has none (see `RewardModelScore` for GRPO's)."""
    from datasets import Dataset

    prompts = rows["prompt"]
    encoded = {}
    for side in ("chosen", "rejected"):
        texts = reward_model_texts(tokenizer, prompts, rows[side])
        encoded[f"{side}_ids"] = tokenizer(text=texts, add_special_tokens=False)["input_ids"]
    return Dataset.from_dict(encoded)
