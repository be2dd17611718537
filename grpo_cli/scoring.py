"""Calling rewards: the one path by which `train` (GRPO and PPO), `eval` and `rewards test` score completions.

`plugins` names rewards (resolves a recipe entry and binds its args), `reward_models` makes reward models
callable; this module calls what they give it:

- `RewardCall` wraps each reward as the trainers call it (TRL's contract): it checks every result (count, type,
  NaN), applies the entry's `on_error` policy and `timeout`, and reports its time and error count through TRL's
  `log_metric`. With `isolation: process` it calls the reward in a worker process (`reward_workers`). It pickles as the recipe entry it came from and binds that again when unpickled, so a reward
  defined in a file pickles too.
- `reward_kwargs` builds what TRL 1.12's GRPOTrainer passes every reward besides prompts and completions (the
  dataset columns, `completion_ids`, `trainer_state`, `log_extra`, `log_metric`), for the paths that are not
  GRPOTrainer: PPO's bridge, eval and `rewards test`. `RewardLog` is where their `log_metric` and `log_extra`
  calls go; `run_state` is the `trainer_state` they get.
- `score_table` and `weighted_total` score a batch with several rewards and sum them as TRL does
  (`advantages` turns such tables into GRPO's advantages).
"""

from __future__ import annotations

import copy
import functools
import math
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from grpo_cli import reward_binding, reward_workers, signatures
from grpo_cli.errors import UserError, describe, shorten

# ---- one reward, called safely ----


class RewardError(UserError):
    """A reward misbehaved during a run (raised, timed out, returned a bad value) and its policy is `fail`."""


class _Timeout(Exception):
    pass


# The per-completion columns a reward may give through `log_extra` to say why it scored what it did; logged as
# `<reward name>/<column>` so that two rewards giving them never share a column (see docs/rewards.md).
EXPLAINED = ("verdict", "details")


# A reward failing on at least this share of a logged step's completions is warned about (once per reward): under
# `on_error: zero` or `skip` the run goes on, learning from the zeros (or from the other rewards) instead.
ERROR_SHARE_WARNED = 0.5


@dataclass
class ErrorTally:
    """What a reward's `on_error` policy replaced so far: completions scored, errors among them, the first error."""

    completions: int = 0
    errors: int = 0
    first_error: str | None = None

    def as_dict(self) -> dict:
        return {"completions": self.completions, "errors": self.errors, "first_error": self.first_error}


# What a reward may raise and still be "a reward error": any Exception, and SystemExit, so that a `sys.exit()`
# inside a reward is handled by its `on_error` policy instead of silently ending the run with its exit code.
# KeyboardInterrupt stays out: Ctrl-C must reach the trainer.
_REWARD_FAILURES = (Exception, SystemExit)


class RewardCall:
    """A bound reward as the trainers call it: TRL's contract, checked results, the entry's error policy."""

    def __init__(self, bound: reward_binding.BoundReward):
        if bound.fn is None:
            raise TypeError(
                f"reward {bound.name!r} is a reward model: pass it through load_reward_models first"
            )
        self.fn = bound.fn
        self.__name__ = bound.name  # TRL logs rewards/<__name__>/mean
        self.on_error = bound.entry.on_error
        self.timeout = bound.entry.timeout
        self._accepts = signatures.accepted_kwargs(bound.fn)
        # Arguments bound from the recipe win over dataset columns of the same name.
        self._bound_args = set(bound.fn.keywords) if isinstance(bound.fn, functools.partial) else set()
        self._entry = (
            None if bound.spec.ref is None else bound.entry.model_copy(update={"name": bound.spec.ref})
        )
        self.tally = ErrorTally()  # over every batch this call scored (see `error_warning`)
        self.isolation = getattr(bound.entry, "isolation", "in_process")
        self._worker = None
        if self.isolation == "process":
            if self._entry is None:
                raise TypeError(f"reward {bound.name!r} is a reward model: it runs in the caller's process")
            self._worker = reward_workers.RewardWorker(self._entry, bound.name)

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
        """Scores for one batch and how many were errors (replaced as `on_error` says), counted in `tally`."""
        scores, errors = self._score(prompts, completions, kwargs)
        self.tally.completions += len(completions)
        self.tally.errors += errors
        return scores, errors

    def error_warning(self, completions: int, errors: int, step: int) -> str | None:
        """What to warn about when `errors` of the `completions` this reward scored in `step` were errors: None
        below ERROR_SHARE_WARNED."""
        if not completions or errors / completions < ERROR_SHARE_WARNED:
            return None
        instead = {
            "zero": "scores each 0, so the run learns from those zeros",
            "skip": "leaves them out (None), so the run learns from the other rewards alone",
        }.get(self.on_error, "replaces them")
        return (
            f"reward {self.__name__!r} failed on {errors} of {completions} completions ({errors / completions:.0%}) "
            f"at step {step}, and on_error: {self.on_error} {instead}; first error: {self.tally.first_error}"
        )

    def _score(self, prompts, completions, kwargs: dict) -> tuple[list[float | None], int]:
        try:
            raw = self._invoke(prompts, completions, kwargs)
        except (_Timeout, reward_workers.WorkerLost) as err:
            return self._fail_all(str(err), prompts, completions)
        except reward_workers.BadResult as err:
            return self._fail_all(f"returned {err}", prompts, completions)
        except _REWARD_FAILURES as err:
            if self.on_error == "fail":
                self._raise_first_failing(err, prompts, completions, kwargs)
            return self._fail_all(f"raised {_what(err)}", prompts, completions)
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
            self._noted(f"returned {problem}")
            scores.append(0.0 if self.on_error == "zero" else None)
        return scores, errors

    def _invoke(self, prompts, completions, kwargs):
        kwargs = self._explained(kwargs)
        chosen = {
            k: v
            for k, v in {"prompts": prompts, **kwargs}.items()
            if k not in self._bound_args and (self._accepts is None or k in self._accepts)
        }
        if self._worker is not None:  # pickled on the way: a copy of its own already
            prompts = chosen.pop("prompts", None)
            return self._worker.call(prompts, completions, chosen, self.timeout)
        # Each reward gets its own copy of the batch: one that rewrites or empties its lists in place (a "cleaned"
        # completion, a popped column) must not change what the next reward scores.
        call = {k: _own_copy(v) for k, v in chosen.items()}
        completions = _own_copy(completions)
        if self.timeout is None:
            return _awaited(self.fn(completions=completions, **call))
        # A daemon thread, not a pool: a call that never returns must not keep the process from exiting.
        outcome = {}

        def run():
            try:
                outcome["value"] = _awaited(self.fn(completions=completions, **call))
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

    def _explained(self, kwargs: dict) -> dict:
        """`kwargs` with a `log_extra` that logs the EXPLAINED columns under this reward's name."""
        log_extra = kwargs.get("log_extra")
        if not callable(log_extra):
            return kwargs
        name = self.__name__

        def named_log_extra(column, values):
            log_extra(f"{name}/{column}" if column in EXPLAINED else column, values)

        return {**kwargs, "log_extra": named_log_extra}

    def close(self) -> None:
        """End this reward's worker process, if it has one (a later call starts another)."""
        if self._worker is not None:
            self._worker.stop()

    def _raise_first_failing(self, err: BaseException, prompts, completions, kwargs):
        """Stop the run naming the completion that made the reward raise: retried alone, the first that does."""
        quiet = {"log_metric": lambda *a, **k: None, "log_extra": lambda *a, **k: None}
        n = len(completions)
        for i in range(n if n > 1 else 0):
            one = {k: v[i : i + 1] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
            try:
                self._invoke(prompts[i : i + 1], completions[i : i + 1], {**one, **quiet})
            except (_Timeout, reward_workers.WorkerLost, reward_workers.BadResult):
                break
            except _REWARD_FAILURES as alone:
                self._raise(f"raised {_what(alone)}{_raised_at(alone)}", prompts[i], completions[i])
        self._raise(
            f"raised {_what(err)}{_raised_at(err)}",
            prompts[0] if prompts else "",
            completions[0] if completions else "",
            batch=n,
        )

    def _fail_all(self, problem: str, prompts, completions):
        if self.on_error == "fail":
            first = (prompts[0] if prompts else "", completions[0] if completions else "")
            self._raise(problem, *first, batch=len(completions))
        self._noted(problem)
        value = 0.0 if self.on_error == "zero" else None
        return [value] * len(completions), len(completions)

    def _noted(self, problem: str) -> None:
        if self.tally.first_error is None:
            self.tally.first_error = problem

    def _raise(self, problem: str, prompt, completion, batch: int = 1):
        which = f" (the first of a batch of {batch})" if batch > 1 else ""
        raise RewardError(
            f"reward {self.__name__!r} {problem}\n  prompt: {shorten(prompt)}\n  completion: {shorten(completion)}"
            f"{which}\n  (set on_error: zero or skip on this reward to score such cases 0 or None and go on)"
        )


_awaited = reward_workers.awaited


def _what(err: BaseException) -> str:
    """What a reward raised, in one line (for one raised in its worker process, what it raised there)."""
    return err.what if isinstance(err, reward_workers.RewardRaised) else describe(err)


def _own_copy(value):
    """A list of the batch (prompts, completions, a column) copied down to its messages; anything else (the
    trainer state, a logging callback) as it is."""
    return copy.deepcopy(value) if isinstance(value, list) else value


def _restore_call(entry, name: str) -> RewardCall:
    call = RewardCall(reward_binding.bind(entry, f"reward {name!r}"))
    call.__name__ = name
    return call


def _raised_at(err: BaseException) -> str:
    if isinstance(err, reward_workers.RewardRaised):
        return err.where
    frames = traceback.extract_tb(err.__traceback__)
    frames = [f for f in frames if Path(f.filename).resolve() != Path(__file__).resolve()]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _bad_result(raw, count: int) -> str | None:
    """What is wrong with a reward's return value as a whole, or None (a list, tuple or array of `count`)."""
    if isinstance(raw, str | bytes | dict) or not hasattr(raw, "__len__") or not hasattr(raw, "__iter__"):
        return f"a {type(raw).__name__}, not a list with one score per completion ({count})"
    if len(raw) != count:
        return f"{len(raw)} value{'' if len(raw) == 1 else 's'} for {count} completions"
    return None


def _bad_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, Exception):  # a reward's way to say it failed on this completion alone (the judge's)
        return f"an error for this completion: {describe(value)}"
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
    rewards: list[RewardCall] | list[reward_binding.BoundReward],
    prompts: list,
    completions: list,
    columns: dict[str, list],
    *,
    completion_ids: list[list[int]] | None = None,
    trainer_state: Any = None,
    log: RewardLog | None = None,
) -> list[list[float | None]]:
    """Each reward's scores (one list per reward) for a batch, through the same checks as training, called with
    what GRPOTrainer passes (see `reward_kwargs`; `completion_ids` default: `text_ids` of the completions).
    Bound rewards are wrapped for this batch only: to score many batches, wrap them once and pass the calls."""
    if completion_ids is None:
        completion_ids = text_ids(completions)
    kwargs = reward_kwargs(columns, completion_ids, trainer_state, log)
    calls = [r if isinstance(r, RewardCall) else RewardCall(r) for r in rewards]
    return [call.score(prompts, completions, kwargs)[0] for call in calls]


def weighted_total(bound: list[reward_binding.BoundReward], table: list[list[float | None]]) -> list[float]:
    """The weighted sum per completion, skipping None (as TRL's nansum does)."""
    weights = [b.entry.weight for b in bound]
    return [
        sum(w * s for w, s in zip(weights, col, strict=True) if s is not None)
        for col in zip(*table, strict=True)
    ]
