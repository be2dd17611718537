"""Drive TRL's PPOTrainer with reward functions instead of a reward model.

TRL 1.12's `PPOTrainer` only accepts a reward *model*, and scores each rollout with
`trl.experimental.utils.get_reward(reward_model, query_responses, pad_token_id, context_length)`:

    backbone = getattr(model, model.base_model_prefix)
    output = backbone(input_ids=..., attention_mask=..., position_ids=..., return_dict=True,
                      output_hidden_states=True, use_cache=False)
    logits = model.score(output.hidden_states[-1])          # (B, T, 1)
    reward = logits[range(B), last_response_token_index]     # (B,)

`RewardFunctionModel` honours exactly that interface, but its backbone decodes each rollout, looks up the dataset
row its query came from, calls the reward functions (the same contract as GRPO: `fn(prompts, completions,
**columns)`), and writes the score at every position, so whichever position `get_reward` picks carries it.
`score` is the identity. `RolloutRewards` is the score function grpo-cli gives it: every reward of the recipe
through `grpo_cli.scoring` (reward models reach it as reward functions too, see `reward_models.RewardModelScore`), with
the arguments GRPOTrainer gives rewards (`scoring.reward_kwargs`): the response's token ids as `completion_ids`
(up to and including the stop token, as GRPO's), PPOTrainer's own `TrainerState` as `trainer_state`, and
`log_metric` values averaged into each logged step of metrics.jsonl.

Why the lookup works: every query is left-padded to ONE width for the whole dataset (train and eval), so the
first `context_length` tokens of a rollout are exactly its query, and the query's token ids identify its row.
`get_reward` replaces pads with token 0 in `input_ids`; the attention mask tells them apart, so the original ids
are restored before the lookup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.modeling_outputs import BaseModelOutput

from grpo_cli import reward_binding, scoring, signatures
from grpo_cli.errors import UserError
from grpo_cli.prompting import as_completion

ScoreFn = Callable[..., Sequence[float]]
"""`score_fn(prompts, completions, columns[, completion_ids=...]) -> one float per completion` (weights and error
policy applied); `completion_ids` (each response's token ids) is passed when the function takes it."""


def check_pad_token(tokenizer) -> None:
    """TRL's PPO tells padding from text by the pad id (attention masks, where a response ends): it needs a pad
    token, and one distinct from EOS, or every EOS would read as padding."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        what = "has no pad token" if tokenizer.pad_token_id is None else "pads with its EOS token"
        raise UserError(
            f"the tokenizer {what} ({tokenizer.eos_token!r} is EOS); TRL's PPO tells padding from text by the pad "
            "id, so its pad token must differ from EOS. Use a tokenizer with a pad or unk token, or add one."
        )


def left_pad(
    token_ids: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None
) -> list[list[int]]:
    """Left-pad every query to `width` (default: the longest), the layout `RewardFunctionModel` relies on.

    Pad train and eval queries with the same width: PPOTrainer takes `context_length` from the batch width.
    """
    longest = max((len(ids) for ids in token_ids), default=0)
    width = longest if width is None else width
    if longest > width:
        raise ValueError(f"A query has {longest} tokens, more than the padding width {width}.")
    return [[pad_token_id] * (width - len(ids)) + list(ids) for ids in token_ids]


class RewardFunctionModel(nn.Module):
    """A stand-in for PPOTrainer's `reward_model` that scores rollouts with reward functions.

    Args:
        tokenizer: the policy's tokenizer; its pad token must differ from its EOS token.
        rows: one dict per dataset row (train and eval): the prompt as it was fed under `prompt_key`, and every
            other column the rewards may ask for.
        query_ids: the token ids of each row's query exactly as they appear in the PPO batch, left-padded with
            the tokenizer's pad token to one width (see `left_pad`); that width is `context_length`.
        score_fn: `score_fn(prompts, completions, columns) -> list[float]`, one finite float per completion.
            `columns` maps every column except the prompt to its values for the batch.
        prompt_key: the key of the prompt in each row.

    Identical queries must come from rows that agree on every column: otherwise which row a rollout belongs to
    is ambiguous and construction raises `UserError` naming the prompt.
    """

    base_model_prefix = "backbone"

    def __init__(
        self,
        tokenizer: Any,
        rows: Sequence[Mapping[str, Any]],
        query_ids: Sequence[Sequence[int]],
        score_fn: ScoreFn,
        *,
        prompt_key: str = "prompt",
    ) -> None:
        super().__init__()
        self.backbone = _RewardBackbone(tokenizer, rows, query_ids, score_fn, prompt_key=prompt_key)
        # `prepare_deepspeed` reads `config.hidden_size(s)`; there is none to report.
        self.config = SimpleNamespace()
        self.requires_grad_(False)
        self.eval()

    @property
    def context_length(self) -> int:
        return self.backbone.context_length

    def score(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # The backbone already put the reward in the single hidden channel.
        return hidden_states

    def train(self, mode: bool = True) -> RewardFunctionModel:
        # Never trained: stay in eval mode whatever the caller asks.
        return super().train(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class _RewardBackbone(nn.Module):
    """The part `get_reward` calls: rollouts in, the score of each broadcast over positions out."""

    def __init__(
        self,
        tokenizer: Any,
        rows: Sequence[Mapping[str, Any]],
        query_ids: Sequence[Sequence[int]],
        score_fn: ScoreFn,
        *,
        prompt_key: str,
    ) -> None:
        super().__init__()
        check_pad_token(tokenizer)
        pad_id = tokenizer.pad_token_id
        if len(rows) != len(query_ids):
            raise ValueError(f"Got {len(rows)} rows but {len(query_ids)} queries; pass one query per row.")
        if not rows:
            raise ValueError("RewardFunctionModel needs at least one row.")
        widths = {len(ids) for ids in query_ids}
        if len(widths) != 1:
            raise ValueError(
                f"Queries have different lengths {sorted(widths)}; left-pad them all to one width (see left_pad)."
            )

        self.tokenizer = tokenizer
        self.pad_token_id = pad_id
        self.context_length = widths.pop()
        self.prompt_key = prompt_key
        self.score_fn = score_fn
        self._takes_ids = "completion_ids" in (signatures.accepted_kwargs(score_fn) or {"completion_ids"})
        self.rows = [dict(row) for row in rows]
        self.row_index = _index_rows(self.rows, query_ids, prompt_key)
        self.columns = [key for key in self.rows[0] if key != prompt_key]
        # A tensor for `.to()`, accelerate and DeepSpeed to handle like any model's. Not saved with the state
        # dict; not trainable (a buffer, not a parameter).
        self.register_buffer("device_anchor", torch.zeros(()), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **_ignored: Any,  # position_ids, return_dict, output_hidden_states, use_cache: nothing to do with them
    ) -> BaseModelOutput:
        if attention_mask is None:
            attention_mask = input_ids != self.pad_token_id
        attention_mask = attention_mask.bool()
        batch, length = input_ids.shape
        if length < self.context_length:
            raise ValueError(
                f"Got sequences of {length} tokens, shorter than the query width {self.context_length} the reward "
                "bridge was built with."
            )
        # get_reward masks pads to token 0 in input_ids; put the pad id back so queries match the index.
        token_ids = input_ids.masked_fill(~attention_mask, self.pad_token_id).tolist()
        response_mask = attention_mask[:, self.context_length :].tolist()

        batch_rows, completions, responses = [], [], []
        for ids, mask in zip(token_ids, response_mask, strict=True):
            batch_rows.append(self._row_of(ids[: self.context_length]))
            # The response runs up to its first pad, as `get_reward`'s `sequence_lengths` does.
            length_until_pad = mask.index(False) if False in mask else len(mask)
            response = ids[self.context_length : self.context_length + length_until_pad]
            responses.append(response)
            completions.append(self.tokenizer.decode(response, skip_special_tokens=True))

        scores = self._score(batch_rows, completions, responses)
        # On the rollouts' device, where get_reward indexes it; float32 whatever the module's dtype, so that
        # rewards such as 0.3 stay exact.
        values = torch.tensor(scores, dtype=torch.float32, device=input_ids.device)
        hidden = values.view(batch, 1, 1).expand(batch, length, 1)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,))

    def _row_of(self, query: list[int]) -> dict[str, Any]:
        index = self.row_index.get(tuple(query))
        if index is None:
            text = self.tokenizer.decode(query, skip_special_tokens=True)
            raise KeyError(
                f"The reward bridge got a query that is not in its dataset: {text!r}. Build it from every train "
                f"and eval row, with the queries left-padded exactly as in the PPO batch (width "
                f"{self.context_length})."
            )
        return self.rows[index]

    def _score(
        self, batch_rows: list[dict[str, Any]], completions: list[str], responses: list[list[int]]
    ) -> list[float]:
        prompts = [row[self.prompt_key] for row in batch_rows]
        # Conversational prompts (message lists) get completions as message lists, as in GRPO.
        as_fed = [
            as_completion(text, isinstance(prompt, list))
            for prompt, text in zip(prompts, completions, strict=True)
        ]
        columns = {key: [row[key] for row in batch_rows] for key in self.columns}
        ids = {"completion_ids": responses} if self._takes_ids else {}
        return self._checked(self.score_fn(prompts, as_fed, columns, **ids), prompts, "The reward functions")

    @staticmethod
    def _checked(scores: Sequence[Any], prompts: list[Any], source: str) -> list[float]:
        scores = list(scores)
        if len(scores) != len(prompts):
            raise ValueError(f"{source} returned {len(scores)} scores for {len(prompts)} completions.")
        for score, prompt in zip(scores, prompts, strict=True):
            if score is None or not math.isfinite(score):
                raise ValueError(
                    f"{source} returned {score!r} for a completion of prompt {prompt!r}; PPO needs a finite "
                    "score for every completion."
                )
        return [float(score) for score in scores]


def _index_rows(
    rows: list[dict[str, Any]], query_ids: Sequence[Sequence[int]], prompt_key: str
) -> dict[tuple[int, ...], int]:
    """Map each left-padded query to its row; identical queries must come from identical rows."""
    keys = set(rows[0])
    if prompt_key not in keys:
        raise ValueError(f"The rows have no {prompt_key!r} key (their keys: {sorted(keys)}).")
    index: dict[tuple[int, ...], int] = {}
    for position, (row, ids) in enumerate(zip(rows, query_ids, strict=True)):
        if set(row) != keys:
            raise ValueError(f"Row {position} has keys {sorted(row)}, row 0 has {sorted(keys)}.")
        query = tuple(int(token) for token in ids)
        first = index.setdefault(query, position)
        if first != position and not _same(rows[first], row):
            differing = sorted(key for key in keys if not _same(rows[first][key], row[key]))
            raise UserError(
                f"The prompt {row[prompt_key]!r} appears more than once (rows {first} and {position}) with "
                f"different {', '.join(differing)}: PPO cannot tell which row a completion belongs to. Remove "
                "the duplicates or make the prompts differ."
            )
    return index


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays, whose == is elementwise
        return False


class RolloutRewards(TrainerCallback):
    """The bridge's score function: every reward of the recipe on a batch of rollouts, weighted and summed.

    Also a callback, because PPOTrainer logs only the total (`objective/scores`): each logged training step gets,
    for every reward, `rewards/<name>/mean` (the mean over that step's rollouts of the scores it gave, None scores
    left out), `rewards/<name>/errors` (how many scores its `on_error` policy replaced) and
    `rewards/<name>/seconds` (the time spent in it during the step), and the mean of what each reward passed to
    `log_metric` under its own name, as GRPOTrainer logs it. RunLogger writes them to metrics.jsonl with the mean as
    `rewards/<name>`, the names GRPO runs use. What rewards pass to `log_extra` is dropped: PPOTrainer keeps no
    completions table (GRPO keeps it in TRL's, with `trainer.log_completions`).

    Rewards get PPOTrainer's `TrainerState` (taken in `on_train_begin`) as `trainer_state`: `global_step` is the
    number of updates done before the rollouts being scored, `max_steps` the run's total, as under GRPO.

    It also logs the rollouts' lengths as GRPOTrainer logs its completions' (PPOTrainer logs none), so that
    metrics.jsonl has `completion_length` and `clipped_ratio` for both algorithms: `completions/mean_length`, the
    mean number of response tokens up to and including the stop token (EOS), and `completions/clipped_ratio`, the
    share of responses that reached `response_length` tokens without one.
    """

    def __init__(self, rewards: list[reward_binding.BoundReward]):
        self.rewards = rewards  # each with a callable `fn`: see reward_models.load_reward_models
        self.calls = [scoring.RewardCall(r) for r in rewards]
        self.logging = True
        self.state = None  # the trainer's TrainerState, once training begins
        self.max_length: int | None = None  # PPOConfig.response_length, once training begins
        self.stop_ids: set[int] = set()  # the tokens that end a response (EOS, or the recipe's stop_token_id)
        self.log = scoring.RewardLog()
        self._reset()

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs):
        self.state = state
        self.max_length = getattr(args, "response_length", None)
        stop_ids = (getattr(args, "stop_token_id", None), getattr(processing_class, "eos_token_id", None))
        self.stop_ids = {i for i in stop_ids if i is not None}

    def __call__(
        self,
        prompts: list,
        completions: list,
        columns: dict[str, list],
        completion_ids: list[list[int]] | None = None,
    ) -> list[float]:
        if completion_ids is None:
            completion_ids = scoring.text_ids(completions)
        elif self.logging:
            self._count_lengths(completion_ids)
        log = self.log if self.logging else scoring.RewardLog()
        kwargs = scoring.reward_kwargs(columns, completion_ids, self.state, log)
        table = []
        for reward, call in zip(self.rewards, self.calls, strict=True):
            started = time.perf_counter()
            scores, errors = call.score(prompts, completions, kwargs)
            table.append(scores)
            if self.logging:
                valid = [s for s in scores if s is not None]
                self._sums[reward.name] += sum(valid)
                self._counts[reward.name] += len(valid)
                self._errors[reward.name] += errors
                self._seconds[reward.name] += time.perf_counter() - started
        return scoring.weighted_total(self.rewards, table)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "objective/scores" not in logs:
            return
        for reward in self.rewards:
            count = self._counts[reward.name]
            logs[f"rewards/{reward.name}/mean"] = self._sums[reward.name] / count if count else None
            logs[f"rewards/{reward.name}/errors"] = self._errors[reward.name]
            logs[f"rewards/{reward.name}/seconds"] = self._seconds[reward.name]
        for name, value in self.log.take_metrics().items():
            logs.setdefault(name, value)
        # GRPOTrainer's names, which metrics.jsonl renames to completion_length and clipped_ratio.
        responses = self._responses
        logs["completions/mean_length"] = self._tokens / responses if responses else None
        logs["completions/clipped_ratio"] = self._clipped / responses if responses else None
        self._reset()

    def _count_lengths(self, completion_ids: list[list[int]]) -> None:
        """Response token ids as the bridge passes them: up to the first pad, the stop token included."""
        for ids in completion_ids:
            self._responses += 1
            self._tokens += len(ids)
            limit = self.max_length if self.max_length is not None else math.inf
            self._clipped += len(ids) >= limit and not self.stop_ids.intersection(ids)

    def _reset(self) -> None:
        names = [r.name for r in self.rewards]
        self._sums = dict.fromkeys(names, 0.0)
        self._counts = dict.fromkeys(names, 0)
        self._errors = dict.fromkeys(names, 0)
        self._seconds = dict.fromkeys(names, 0.0)
        self._responses = self._tokens = self._clipped = 0
        self.log.take_extra()

    def unlogged(self, method):
        """`method` with scoring left out of the logged means (TRL's sample tables score held-out prompts)."""

        def wrapped(*args, **kwargs):
            self.logging = False
            try:
                return method(*args, **kwargs)
            finally:
                self.logging = True

        return wrapped
