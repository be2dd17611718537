"""Calling rewards: the one path by which `train` (GRPO and PPO), `eval` and `rewards test` score completions.

`plugins` names rewards (resolves a recipe entry and binds its args); this module calls what it bound:

- `load_reward_models` turns every `model:` reward into a callable `RewardModelScore`, so that from here on a
  reward model is scored like a function: on the policy's device, batched, with the text TRL's GRPOTrainer gives
  reward models (prompt + completion; the reward tokenizer's chat template for chat prompts).
- `RewardCall` wraps each reward as the trainers call it (TRL's contract): it checks every result (count, type,
  NaN), applies the entry's `on_error` policy and `timeout`, and reports its time and error count through TRL's
  `log_metric`. It pickles as the recipe entry it came from and binds that again when unpickled, so a reward
  defined in a file pickles too.
- `reward_kwargs` builds what TRL 1.12's GRPOTrainer passes every reward besides prompts and completions (the
  dataset columns, `completion_ids`, `trainer_state`, `log_extra`, `log_metric`), for the paths that are not
  GRPOTrainer: PPO's bridge, eval and `rewards test`. `RewardLog` is where their `log_metric` and `log_extra`
  calls go; `run_state` is the `trainer_state` they get.
- `score_table` and `weighted_total` score a batch with several rewards and sum them as TRL does;
  `advantages` is GRPO's group-advantage arithmetic over such tables (what `rewards test` shows).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from grpo_cli import plugins
from grpo_cli.errors import UserError, describe

# ---- one reward, called safely ----


class RewardError(UserError):
    """A reward misbehaved during a run (raised, timed out, returned a bad value) and its policy is `fail`."""


class _Timeout(Exception):
    pass


# What a reward may raise and still be "a reward error": any Exception, and SystemExit, so that a `sys.exit()`
# inside a reward is handled by its `on_error` policy instead of silently ending the run with its exit code.
# KeyboardInterrupt stays out: Ctrl-C must reach the trainer.
_REWARD_FAILURES = (Exception, SystemExit)


class RewardCall:
    """A bound reward as the trainers call it: TRL's contract, checked results, the entry's error policy."""

    def __init__(self, bound: plugins.BoundReward):
        if bound.fn is None:
            raise TypeError(
                f"reward {bound.name!r} is a reward model: pass it through load_reward_models first"
            )
        self.fn = bound.fn
        self.__name__ = bound.name  # TRL logs rewards/<__name__>/mean
        self.on_error = bound.entry.on_error
        self.timeout = bound.entry.timeout
        self._accepts = plugins.accepted_kwargs(bound.fn)
        # Arguments bound from the recipe win over dataset columns of the same name.
        self._bound_args = set(bound.fn.keywords) if isinstance(bound.fn, functools.partial) else set()
        self._entry = (
            None if bound.spec.ref is None else bound.entry.model_copy(update={"name": bound.spec.ref})
        )

    def __reduce_ex__(self, protocol):
        if self._entry is None:  # a reward model: pickled as it is (it has no name to resolve again)
            return super().__reduce_ex__(protocol)
        # As the recipe entry it came from, bound again on unpickling: a reward defined in a file has no module
        # another process could import, and a class instance may hold what does not pickle (a client, a lock).
        return _restore_call, (self._entry, self.__name__)

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        log_metric = kwargs.get("log_metric")
        started = time.perf_counter()
        scores, errors = self.score(prompts, completions, kwargs)
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/seconds", time.perf_counter() - started)
            log_metric(f"rewards/{self.__name__}/errors", float(errors))
        return scores

    def score(self, prompts, completions, kwargs: dict) -> tuple[list[float | None], int]:
        """Scores for one batch and how many were errors (replaced as `on_error` says)."""
        try:
            raw = self._invoke(prompts, completions, kwargs)
        except _Timeout as err:
            return self._fail_all(str(err), prompts, completions)
        except _REWARD_FAILURES as err:
            if self.on_error == "fail":
                self._raise_first_failing(err, prompts, completions, kwargs)
            return self._fail_all(f"raised {describe(err)}", prompts, completions)
        problem = _bad_result(raw, len(completions))
        if problem is not None:
            return self._fail_all(f"returned {problem}", prompts, completions)
        scores, errors = [], 0
        for i, value in enumerate(raw):
            problem = _bad_value(value)
            if problem is None:
                scores.append(None if value is None else float(value))
                continue
            errors += 1
            if self.on_error == "fail":
                self._raise(f"returned {problem}", prompts[i], completions[i])
            scores.append(0.0 if self.on_error == "zero" else None)
        return scores, errors

    def _invoke(self, prompts, completions, kwargs):
        call = {
            k: v
            for k, v in {"prompts": prompts, **kwargs}.items()
            if k not in self._bound_args and (self._accepts is None or k in self._accepts)
        }
        if self.timeout is None:
            return self.fn(completions=completions, **call)
        # A daemon thread, not a pool: a call that never returns must not keep the process from exiting.
        outcome = {}

        def run():
            try:
                outcome["value"] = self.fn(completions=completions, **call)
            except BaseException as err:
                outcome["error"] = err

        thread = threading.Thread(target=run, name=f"reward-{self.__name__}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():  # it cannot be stopped; it is abandoned and its result ignored
            raise _Timeout(f"ran over its timeout of {self.timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _raise_first_failing(self, err: BaseException, prompts, completions, kwargs):
        """Stop the run naming the completion that made the reward raise: retried alone, the first that does."""
        quiet = {"log_metric": lambda *a, **k: None, "log_extra": lambda *a, **k: None}
        n = len(completions)
        for i in range(n if n > 1 else 0):
            one = {k: v[i : i + 1] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
            try:
                self._invoke(prompts[i : i + 1], completions[i : i + 1], {**one, **quiet})
            except _Timeout:
                break
            except _REWARD_FAILURES as alone:
                self._raise(f"raised {describe(alone)}{_raised_at(alone)}", prompts[i], completions[i])
        self._raise(
            f"raised {describe(err)}{_raised_at(err)}",
            prompts[0] if prompts else "",
            completions[0] if completions else "",
            batch=n,
        )

    def _fail_all(self, problem: str, prompts, completions):
        if self.on_error == "fail":
            first = (prompts[0] if prompts else "", completions[0] if completions else "")
            self._raise(problem, *first, batch=len(completions))
        value = 0.0 if self.on_error == "zero" else None
        return [value] * len(completions), len(completions)

    def _raise(self, problem: str, prompt, completion, batch: int = 1):
        which = f" (the first of a batch of {batch})" if batch > 1 else ""
        raise RewardError(
            f"reward {self.__name__!r} {problem}\n  prompt: {shorten(prompt)}\n  completion: {shorten(completion)}"
            f"{which}\n  (set on_error: zero or skip on this reward to score such cases 0 or None and go on)"
        )


def _restore_call(entry, name: str) -> RewardCall:
    call = RewardCall(plugins.bind(entry, f"reward {name!r}"))
    call.__name__ = name
    return call


def _raised_at(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    frames = [f for f in frames if Path(f.filename).resolve() != Path(__file__).resolve()]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _bad_result(raw, count: int) -> str | None:
    """What is wrong with a reward's return value as a whole, or None (a list, tuple or array of `count`)."""
    if inspect.isawaitable(raw):
        if inspect.iscoroutine(raw):
            raw.close()
        return "a coroutine: async rewards are not supported, make it a plain def"
    if isinstance(raw, str | bytes | dict) or not hasattr(raw, "__len__") or not hasattr(raw, "__iter__"):
        return f"a {type(raw).__name__}, not a list with one score per completion ({count})"
    if len(raw) != count:
        return f"{len(raw)} value{'' if len(raw) == 1 else 's'} for {count} completions"
    return None


def _bad_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        return f"a non-number {value!r}"
    try:
        number = float(value)  # int, float, bool, numpy and torch scalars
    except (TypeError, ValueError):
        return f"a non-number {value!r}"
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return f"an infinite score {number}"
    return None


def shorten(value, limit: int = 200) -> str:
    """A value's repr, cut to `limit` characters: prompts and completions in messages and tables."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- reward models ----


def default_device() -> str:
    """Where eval and `rewards test` put models: the GPU when there is one. Training passes the trainer's device."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RewardModelScore:
    """A sequence-classification reward model as a reward function: its score of prompt + completion.

    The text is built as TRL 1.12's GRPOTrainer builds it for reward models: concatenated for text prompts,
    through the reward tokenizer's chat template (with `chat_template_kwargs`) for chat prompts; right-padded, no
    special tokens added; the whole batch in one forward pass.
    """

    def __init__(self, path: str, dtype, device=None, chat_template_kwargs: dict | None = None):
        from grpo_cli import models

        self.path = path
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        # A saved model, or a reward run's LoRA adapter merged into its base; pad_token_id set from the tokenizer.
        self.model, self.tokenizer = models.load_reward_model(path, dtype)
        if self.tokenizer.pad_token_id is None:
            raise UserError(
                f"reward model {path}: its tokenizer has no pad token, nor an unk or EOS token to pad with"
            )
        self.model.requires_grad_(False).eval().to(device or default_device())
        # A reward run renders its pairs without chat_template_kwargs (RewardConfig has none): whether GRPO's change
        # what it reads depends on the template (Qwen3's reads enable_thinking only for the generation prompt, which
        # is not scored), so the first conversation scored is rendered both ways (`texts`).
        self._compare_kwargs = (
            bool(self.chat_template_kwargs) and models.run_algorithm(Path(path)) == "reward"
        )

    def texts(self, prompts: list, completions: list) -> list[str]:
        """What the model reads for each completion (see the class docstring)."""
        texts = reward_model_texts(self.tokenizer, prompts, completions, self.chat_template_kwargs)
        if self._compare_kwargs and texts:
            self._compare_kwargs = False
            if reward_model_texts(self.tokenizer, prompts[:1], completions[:1]) != texts[:1]:
                from grpo_cli.prompting import warn_once

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
    bound: list[plugins.BoundReward],
    dtype: str = "auto",
    device=None,
    chat_template_kwargs: dict | None = None,
) -> list[plugins.BoundReward]:
    """`bound` with every reward model loaded as a `RewardModelScore`, so that each one has a callable `fn`.

    `dtype` is a recipe's `model.dtype` (the policy's precision); `device` defaults to `default_device()`.
    """
    if all(b.fn is not None for b in bound):
        return list(bound)  # nothing to load: no torch import for rewards that are plain functions
    from grpo_cli.models import torch_dtype
    from grpo_cli.phases import phase

    loaded = []
    for b in bound:
        if b.fn is None:
            with phase(f"loading reward model {b.model_path}"):
                b = dataclasses.replace(
                    b, fn=RewardModelScore(b.model_path, torch_dtype(dtype), device, chat_template_kwargs)
                )
        loaded.append(b)
    return loaded


# ---- what a reward is called with, besides prompts and completions ----


class RewardLog:
    """Where the `log_metric` and `log_extra` calls of rewards go outside GRPOTrainer (which keeps its own).

    `log_metric(name, value)` values are averaged per `take_metrics()`, as GRPOTrainer averages them over a logging
    step; `log_extra(column, values)` collects per-completion values, as GRPOTrainer's completions table does.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.extra: dict[str, list] = defaultdict(list)

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[str(name)].append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        self.extra[str(column)].extend(values)

    def take_metrics(self) -> dict[str, float]:
        """The mean of each metric logged since the last call."""
        means = {name: sum(values) / len(values) for name, values in self.metrics.items() if values}
        self.metrics.clear()
        return means

    def take_extra(self, count: int | None = None) -> dict[str, list]:
        """The values of each extra column logged since the last call. With `count` (the completions scored),
        one value per completion: a column logged by several rewards keeps the last one's values, and a column
        whose values do not come in runs of `count` is left out."""
        extra = dict(self.extra)
        self.extra.clear()
        if count is None:
            return extra
        return {c: v[-count:] for c, v in extra.items() if count and v and len(v) % count == 0}


def run_state(global_step: int = 0, max_steps: int = 0, **fields: Any) -> SimpleNamespace:
    """A `trainer_state` for rewards scored outside a trainer: the attributes of transformers' TrainerState a reward
    reads (`global_step`, `max_steps`, `epoch`, ... and any `fields`, e.g. those of a checkpoint's
    trainer_state.json), without importing transformers."""
    state = {"epoch": None, "num_train_epochs": 0, "log_history": [], "is_world_process_zero": True}
    return SimpleNamespace(
        **{**state, **fields, "global_step": int(global_step), "max_steps": int(max_steps)}
    )


def text_ids(texts: list, tokenizer=None) -> list[list[int]]:
    """`completion_ids` for completions known only as text (`rewards test`): the tokenizer's ids of each text (the
    content of a message list), no special tokens; without a tokenizer, one id per character (its code point)."""
    contents = [
        "".join(m.get("content") or "" for m in t if isinstance(m, dict)) if isinstance(t, list) else str(t)
        for t in texts
    ]
    if tokenizer is None:
        return [[ord(c) for c in text] for text in contents]
    return [tokenizer.encode(text, add_special_tokens=False) for text in contents]


def reward_kwargs(
    columns: dict[str, list],
    completion_ids: list[list[int]],
    trainer_state: Any = None,
    log: RewardLog | None = None,
) -> dict[str, Any]:
    """The keyword arguments TRL 1.12's GRPOTrainer (`_calculate_rewards`) gives every reward besides `prompts`
    and `completions`: the dataset columns, then `completion_ids`, `trainer_state`, `log_extra` and `log_metric`
    (which win over columns of the same name, as in TRL). Without a `log`, what rewards log is dropped."""
    log = log if log is not None else RewardLog()
    return {
        **columns,
        "completion_ids": completion_ids,
        "trainer_state": trainer_state,
        "log_extra": log.log_extra,
        "log_metric": log.log_metric,
    }


# ---- several rewards on a batch ----


def score_table(
    bound: list[plugins.BoundReward],
    prompts: list,
    completions: list,
    columns: dict[str, list],
    *,
    completion_ids: list[list[int]] | None = None,
    trainer_state: Any = None,
    log: RewardLog | None = None,
) -> list[list[float | None]]:
    """Each reward's scores (one list per reward) for a batch, through the same checks as training, called with
    what GRPOTrainer passes (see `reward_kwargs`; `completion_ids` default: `text_ids` of the completions)."""
    if completion_ids is None:
        completion_ids = text_ids(completions)
    kwargs = reward_kwargs(columns, completion_ids, trainer_state, log)
    return [RewardCall(b).score(prompts, completions, kwargs)[0] for b in bound]


def weighted_total(bound: list[plugins.BoundReward], table: list[list[float | None]]) -> list[float]:
    """The weighted sum per completion, skipping None (as TRL's nansum does)."""
    weights = [b.entry.weight for b in bound]
    return [
        sum(w * s for w, s in zip(weights, col, strict=True) if s is not None)
        for col in zip(*table, strict=True)
    ]


# ---- GRPO's advantages ----


def _std(values: list[float | None]) -> float:
    """The unbiased standard deviation of the values that are not None, NaN for fewer than two (TRL's nanstd)."""
    valid = [v for v in values if v is not None]
    if len(valid) < 2:
        return math.nan
    mean = sum(valid) / len(valid)
    return (sum((v - mean) ** 2 for v in valid) / (len(valid) - 1)) ** 0.5


def _mean(values: list[float | None]) -> float:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else math.nan


def _normalise(values: list[float | None], mean: float, std: float | None) -> list[float | None]:
    """(v - mean) / (std + 1e-4), or v - mean when std is None; None stays None."""
    if std is None:
        return [None if v is None else v - mean for v in values]
    return [None if v is None else (v - mean) / (std + 1e-4) for v in values]  # NaN when std is NaN


def advantages(
    tables: list[list[list[float | None]]],
    weights: list[float],
    scale: str = "group",
    aggregation: str = "sum_then_normalize",
) -> list[list[float]]:
    """GRPO's advantage of every completion, computed as TRL 1.12's GRPOTrainer does.

    `tables[g][k][i]` is reward k's score of completion i in group g (the completions of one prompt), None where
    the reward does not apply. `scale` is the recipe's `trainer.scale_rewards`: "group" divides by the group's
    std, "batch" by the std over all groups, "none" not at all (std unbiased, plus 1e-4). A completion that every
    reward gave None is left out of its group's statistics and gets 0, as does anything divided by the std of
    fewer than two values.

    The README's worked example: rewards 1, 0, 2 in one group have mean 1, so unscaled advantages 0, -1, +1.

    >>> advantages([[[1.0, 0.0, 2.0]]], [1.0], "none")
    [[0.0, -1.0, 1.0]]
    """

    def weighted(scores) -> float | None:  # TRL's nansum over the rewards; None when no reward applies
        valid = [(w, s) for w, s in zip(weights, scores, strict=True) if s is not None and not math.isnan(s)]
        return sum(w * s for w, s in valid) if valid else None

    unscorable = [[all(s is None for s in column) for column in zip(*table, strict=True)] for table in tables]
    if aggregation == "sum_then_normalize":
        totals = [[weighted(column) for column in zip(*table, strict=True)] for table in tables]
        batch_std = _std([t for group in totals for t in group])
        result = []
        for group in totals:
            std = {"group": _std(group), "batch": batch_std, "none": None}[scale]
            result.append(_normalise(group, _mean(group), std))
    elif aggregation == "normalize_then_sum":
        # Each reward normalised within its group, then weighted and summed, then the sums over the whole batch.
        totals = []
        for table, skip in zip(tables, unscorable, strict=True):
            normalised = [_normalise(scores, _mean(scores), _std(scores)) for scores in table]
            sums = [weighted(column) for column in zip(*normalised, strict=True)]
            totals.append([None if s else (t or 0.0) for t, s in zip(sums, skip, strict=True)])
        everything = [t for group in totals for t in group]
        result = [_normalise(group, _mean(everything), _std(everything)) for group in totals]
    else:
        raise UserError(
            f"trainer.multi_objective_aggregation: {aggregation!r} is not sum_then_normalize or normalize_then_sum"
        )
    return [[0.0 if a is None or math.isnan(a) else a for a in group] for group in result]


def scale_mode(value) -> str:
    """A recipe's trainer.scale_rewards as TRL reads it (True and False are its older spellings)."""
    mode = {True: "group", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if mode not in ("group", "batch", "none"):
        raise UserError(f"trainer.scale_rewards: {value!r} is not group, batch or none")
    return mode
