"""The check `grpo-cli export` makes on the way out: the exported model, loaded back from disk, against the
run's model on a few inputs (`export` for policies' next-token logits, `export_reward` for reward models' scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grpo_cli import data, prompting
from grpo_cli.recipe import Recipe

DTYPES = ("float32", "bfloat16", "float16")
# Largest |logit difference| accepted, relative to max(1, largest |logit|): merging reorders float sums, and a
# lower precision rounds every weight.
TOLERANCE = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 1e-1}
CHECK_PROMPTS = 4


@dataclass
class Check:
    """The exported model against the run's model on a few prompts."""

    prompts: int
    max_abs_diff: float
    tolerance: float
    next_token_agreement: int  # prompts whose most likely next token is the same
    measure: str = "logits"  # "scores" for a reward model: one number per text

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "max_abs_logit_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "next_token_agreement": self.next_token_agreement,
            "measure": self.measure,
            "ok": self.ok,
        }


def check_prompts(recipe: Recipe, tokenizer) -> list[list[int]]:
    """Token ids of a few of the recipe's prompts, prepared as in training (a named held-out split's, else the
    first rows); fixed texts when the dataset cannot be read here (e.g. a Hub dataset offline)."""
    try:
        # Nothing is split: a generated task makes only these rows; a local file is still parsed whole and a
        # Hub split loaded whole (from its cache), as reading its first rows alone would need another reader.
        rows = data.first_rows(recipe.dataset, CHECK_PROMPTS)
        rows = prompting.prepare(rows, recipe.dataset, tokenizer)
        ids = prompting.tokenize_prompts(tokenizer, list(rows["prompt"]))
    except Exception:  # any failure to read the data: the check still runs on fixed texts
        ids = []
    ids = [row for row in ids if row]
    if not ids:
        texts = ["1+2=", "Hello, how are you?", "The capital of France is", "def add(a, b):"]
        ids = [row for row in tokenizer(texts)["input_ids"] if row]
    return ids[:CHECK_PROMPTS]


def logits(model, prompts: list[list[int]]) -> list:
    """The last position's logits for each prompt (one at a time: no padding to get wrong), in float32 on the CPU."""
    import torch

    outputs = []
    with torch.inference_mode():
        for ids in prompts:
            input_ids = torch.tensor([ids], device=model.device)
            outputs.append(model(input_ids=input_ids).logits[0].float().cpu())
    return outputs


def compare(reference: list, exported: list, dtype: str) -> Check:
    worst, agree, scale = 0.0, 0, 1.0
    for a, b in zip(reference, exported, strict=True):
        worst = max(worst, float((a - b).abs().max()))
        scale = max(scale, float(a.abs().max()))
        agree += int(a[-1].argmax() == b[-1].argmax())
    return Check(len(reference), worst, TOLERANCE[dtype] * scale, agree)
