"""Held-out evaluation's shared parts: the held-out rows, the rewards bound for evaluation, completions scored with
them, and preference pairs scored by a reward model. `grpo-cli eval` (workflows/evaluate_generations.py and
evaluate_pairs.py) and evaluation during training (`eval_during_training`) both come here, so the two measure
the same thing the same way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from grpo_cli import data, prompting, reward_binding, reward_models, scoring, trainer_fields
from grpo_cli.errors import ConfigError, UserError
from grpo_cli.generation import Sample
from grpo_cli.recipe import Recipe

# ---- generations: rewards, prompts, scores ----


@dataclass
class Rewards:
    training: list[reward_binding.BoundReward]  # the recipe's rewards, reward models loaded
    eval_only: list[reward_binding.BoundReward]  # eval.rewards

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.training + self.eval_only]


def bind_rewards(
    recipe: Recipe, training: list[reward_binding.BoundReward] | None = None, device=None
) -> Rewards:
    """The recipe's training and eval-only rewards, bound by the same rules as `validate`, reward models loaded
    (on `device`); `training`: the training rewards a trainer already holds, loaded (not loaded twice)."""
    from grpo_cli import validation

    binding = validation.bind_rewards(recipe)
    if binding.problems:
        raise ConfigError(recipe.path.name if recipe.path else "recipe", binding.problems)
    kwargs = trainer_fields.chat_template_kwargs(recipe)
    load_models = functools.partial(
        reward_models.load_reward_models, dtype=recipe.model.dtype, device=device, chat_template_kwargs=kwargs
    )
    if training is None:
        training = load_models(binding.training)
    return Rewards(list(training), load_models(binding.eval_only))


def held_out_rows(recipe: Recipe, limit: int | None):
    """The recipe's held-out rows (the first `limit` of them), before prompts are built."""
    _, held_out = data.load_splits(recipe.dataset, recipe.seed)
    if held_out is None:
        raise UserError(
            "the recipe has no held-out data to evaluate on: set dataset.eval_split (a split name or file), "
            "dataset.eval_ratio (e.g. 0.1) or dataset.eval_size (e.g. 200), in the recipe or as KEY=VALUE"
        )
    if limit is not None:
        held_out = held_out.select(range(min(limit, len(held_out))))
    return held_out


def score(
    samples: list[list[Sample]],
    rows: list[dict],
    rewards: Rewards,
    chat: bool,
    batch_size: int,
    trainer_state: Any = None,
    log: scoring.RewardLog | None = None,
) -> dict[tuple[int, int], dict]:
    """Score every sample in place with scoring.score_table, `batch_size` completions per reward call, with the
    arguments GRPO gives rewards (`trainer_state`; `log` gets what they log). Returns the `log_extra` values of
    each sample, by (prompt_index, sample_index)."""
    log = log if log is not None else scoring.RewardLog()
    extra: dict[tuple[int, int], dict] = {}
    flat = [s for group in samples for s in group]
    columns = [c for c in (rows[0] if rows else {}) if c != "prompt"]
    # Each reward wrapped once (its signature read once), then called batch after batch.
    training = [scoring.RewardCall(r) for r in rewards.training]
    eval_only = [scoring.RewardCall(r) for r in rewards.eval_only]
    names = [r.name for r in rewards.training + rewards.eval_only]
    try:
        for start in range(0, len(flat), batch_size):
            part = flat[start : start + batch_size]
            # A rollout with tools was asked its prompt plus the environment's observation, as in training.
            prompts = [rows[s.prompt_index]["prompt"] if s.prompt is None else s.prompt for s in part]
            # Completions as TRL hands them to rewards: text, an assistant message for chat prompts, or with tools
            # the transcript (assistant turns, tool calls and results).
            completions = [
                prompting.as_completion(s.text, chat) if s.messages is None else s.messages for s in part
            ]
            kwargs = {c: [rows[s.prompt_index][c] for s in part] for c in columns}
            given = {
                "completion_ids": [s.token_ids for s in part],
                "trainer_state": trainer_state,
                "log": log,
            }
            table = scoring.score_table(training, prompts, completions, kwargs, **given)
            totals = scoring.weighted_total(rewards.training, table) if table else [None] * len(part)
            table_eval_only = scoring.score_table(eval_only, prompts, completions, kwargs, **given)
            logged = log.take_extra(len(part))
            for n, sample in enumerate(part):
                scored = table + table_eval_only
                sample.scores = {name: scores[n] for name, scores in zip(names, scored, strict=True)}
                sample.total = totals[n]
                if (
                    sample.env_rewards
                ):  # an environment's get_reward(): one more reward, weight 1, as TRL adds it
                    sample.scores.update(sample.env_rewards)
                    present = [v for v in sample.env_rewards.values() if v is not None]
                    if present:
                        sample.total = (sample.total or 0.0) + sum(present)
                if logged:
                    extra[(sample.prompt_index, sample.sample_index)] = {c: v[n] for c, v in logged.items()}
    finally:
        for call in training + eval_only:  # the worker processes of `isolation: process` rewards end here
            call.close()
    return extra


# ---- preference pairs ----


def pair_scores(model, tokenizer, rows, batch_size: int = 64) -> list[tuple[float, float]]:
    """(score of chosen, score of rejected) for each prepared preference row."""
    import torch

    from grpo_cli.reward_models import tokenize_pairs

    tokens = tokenize_pairs(rows, tokenizer)
    pad = tokenizer.pad_token_id
    scores: dict[str, list[float]] = {}
    model.eval()
    for side in ("chosen_ids", "rejected_ids"):
        ids, scores[side] = tokens[side], []
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=model.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=model.device)
            with torch.inference_mode():
                scores[side] += model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
    return list(zip(scores["chosen_ids"], scores["rejected_ids"], strict=True))


def summarize_pairs(scored: list[tuple[float, float]]) -> dict[str, float]:
    margins = [c - r for c, r in scored]
    return {
        "pairwise_accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
    }
