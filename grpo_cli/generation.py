"""Generation outside the trainers: the recipe's sampling settings, then batched `generate` with the same stop
and suppressed tokens as training (`models.load_source` loads the model).

Used by `eval`, and meant for `generate` and `export` alike; GRPO training takes `eos_ids` and
`suppressed_special_tokens` from here too, so training and evaluation agree on when a completion ends and which
tokens it may not contain.

How this departs from generation in training, on purpose:
- K=1 decodes greedily, so a one-sample evaluation is deterministic; K>1 samples with the recipe's `trainer:`
  settings. Each generation batch is seeded with `seed + batch index`, and the batches depend only on the
  prompts, so two models given the same prompts draw with the same seeds.
- Prompts go longest first, so a batch wastes little on padding; results come back in the prompts' order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grpo_cli.trainer_fields import mapping, value

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

    from grpo_cli.recipe import Recipe


# ---- stop and suppressed tokens (shared with GRPO training) ----


def eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *ids] if i is not None})


def suppressed_special_tokens(tokenizer, eos_ids=()) -> dict:
    """Generation settings that keep pad, unk and bos out of completions (never a token in `eos_ids`).

    Decoding drops special tokens, so a completion like "7<pad>" reads as "7" to the rewards while never ending:
    a policy trained from scratch learns to stop with such a token instead of EOS (seen with pad, then unk).
    """
    eos = {tokenizer.eos_token_id, *eos_ids}
    ids = {tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id} - eos - {None}
    return {"suppress_tokens": sorted(ids)} if ids else {}


# ---- sampling settings ----

# Every setting that changes which token is chosen, at the value that leaves the model's distribution as it is.
# transformers fills each setting a GenerationConfig leaves unset from the model's own generation_config.json
# (Qwen2.5-Instruct ships repetition_penalty 1.05, temperature 0.7, top_p 0.8, top_k 20), which training does not
# apply: set explicitly, they make eval decode, and PPO sample, as the recipe says.
NEUTRAL_DECODING = {  # greedy decoding and sampling alike
    "num_beams": 1,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,  # min_new_tokens too would warn that both are set
    "renormalize_logits": False,
}
NEUTRAL_SAMPLING = {  # sampling only
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}
# Greedy decoding ignores the sampling settings, but transformers warns ("generation flags are not valid") when
# one it fills from the model's file differs from its own default: those defaults, set, keep it quiet.
GREEDY_SAMPLING = {**NEUTRAL_SAMPLING, "top_k": 50, "min_p": None}


def without_model_defaults(config: GenerationConfig) -> GenerationConfig:
    """A copy of `config` with every decoding setting it leaves unset (None) set to its neutral value, so that
    `generate` takes none from the model's generation_config.json."""
    import copy

    config = copy.deepcopy(config)
    neutral = {**NEUTRAL_DECODING, **(NEUTRAL_SAMPLING if config.do_sample else GREEDY_SAMPLING)}
    for key, setting in neutral.items():
        if getattr(config, key, None) is None:
            setattr(config, key, setting)
    return config


@dataclass(frozen=True)
class Sampling:
    """How completions are generated: greedy for one sample per prompt, else the recipe's sampling settings."""

    num_samples: int
    max_new_tokens: int
    seed: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: dict = field(default_factory=dict)
    # eval decodes one sample greedily; `generate` may ask for one sample drawn at a temperature instead.
    sample_one: bool = False

    @property
    def greedy(self) -> bool:
        return self.num_samples == 1 and not self.sample_one

    def describe(self) -> dict[str, Any]:
        if self.greedy:
            return {"decoding": "greedy", "max_completion_length": self.max_new_tokens}
        return {
            "decoding": "sampling",
            "max_completion_length": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "generation_kwargs": self.generation_kwargs,
            "seed": self.seed,
        }

    def generation_config(self, tokenizer, eos_ids: list[int]) -> GenerationConfig:
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": eos_ids,
            "bos_token_id": tokenizer.bos_token_id,
            **suppressed_special_tokens(tokenizer, eos_ids),  # as GRPO training generates
        }
        if self.greedy:
            return without_model_defaults(GenerationConfig(do_sample=False, **common))
        return without_model_defaults(
            GenerationConfig(
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                min_p=self.min_p,
                repetition_penalty=self.repetition_penalty,
                **{**common, **self.generation_kwargs},
            )
        )


def sampling_settings(recipe: Recipe, num_samples: int) -> Sampling:
    """The recipe's `trainer:` generation settings, TRL's defaults where it sets none."""
    if recipe.algorithm == "ppo":
        # TRL's PPOTrainer samples with its temperature and no top-k/top-p, up to response_length tokens.
        return Sampling(
            num_samples=num_samples,
            max_new_tokens=value(recipe, "response_length"),
            seed=recipe.seed,
            temperature=value(recipe, "temperature"),
        )
    if recipe.algorithm == "sft":
        # SFTConfig has no generation settings: sample as a GRPO stage would by default.
        from grpo_cli.recipe import EvalSection

        limit = (recipe.eval or EvalSection()).max_new_tokens
        recipe = recipe.model_copy(update={"algorithm": "grpo", "trainer": {"max_completion_length": limit}})
    return Sampling(
        num_samples=num_samples,
        max_new_tokens=value(recipe, "max_completion_length") or 512,
        seed=recipe.seed,
        temperature=value(recipe, "temperature"),
        top_p=value(recipe, "top_p"),
        top_k=value(recipe, "top_k"),
        min_p=value(recipe, "min_p"),
        repetition_penalty=value(recipe, "repetition_penalty"),
        generation_kwargs=mapping(recipe, "generation_kwargs"),
    )


# ---- batched generation ----


@dataclass
class Sample:
    """One completion of one prompt, and (once scored) how it scored."""

    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    clipped: bool  # no EOS within max_completion_length
    scores: dict[str, float | None] = field(default_factory=dict)  # reward name -> score
    total: float | None = None  # the weighted total of the recipe's rewards, as training sees it
    # A rollout with tools (`tool_loop`): the completion's messages, the prompt as asked (with an environment's
    # observation), the tool calls and failed calls, the tool results' tokens in `token_ids`, and get_reward().
    messages: list[dict] | None = None
    prompt: Any = None
    tool_calls: int = 0
    tool_failures: int = 0
    tool_tokens: int = 0
    env_rewards: dict[str, float | None] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """The model's tokens (as TRL's completion lengths count them: not a tool's)."""
        return len(self.token_ids) - self.tool_tokens

    @property
    def turns(self) -> int:
        """The assistant's turns: 1 without tools."""
        if self.messages is None:
            return 1
        return sum(1 for m in self.messages if m.get("role") == "assistant")


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    sampling: Sampling,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Sample]]:
    """`sampling.num_samples` completions of each prompt, `batch_size` sequences per left-padded batch;
    `on_batch(n)` is called after each batch with the number of completions it made."""
    import torch

    stops = eos_ids(model, tokenizer)
    config = sampling.generation_config(tokenizer, stops)
    # Longest prompts first: each batch pads little. The order depends on the prompts alone, so two models given
    # the same prompts get the same batches and the same per-batch seeds.
    items = [(i, j) for i in range(len(prompt_ids)) for j in range(sampling.num_samples)]
    items.sort(key=lambda item: -len(prompt_ids[item[0]]))
    results: list[list[Sample | None]] = [[None] * sampling.num_samples for _ in prompt_ids]
    pad = tokenizer.pad_token_id
    model.eval()
    for number, start in enumerate(range(0, len(items), batch_size)):
        batch = items[start : start + batch_size]
        rows = [prompt_ids[i] for i, _ in batch]
        width = max(len(row) for row in rows)
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=model.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device
        )
        if not sampling.greedy:
            torch.manual_seed(sampling.seed + number)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config
            )
        for (i, j), ids in zip(batch, output[:, width:].tolist(), strict=True):
            end = next((n for n, token in enumerate(ids) if token in stops), None)
            kept = ids if end is None else ids[: end + 1]  # as TRL: the EOS counts, what follows it does not
            text = tokenizer.decode(kept, skip_special_tokens=True)
            results[i][j] = Sample(i, j, text, kept, clipped=end is None)
        if on_batch is not None:
            on_batch(len(batch))
    return results


# ---- loading a model to generate with ----
