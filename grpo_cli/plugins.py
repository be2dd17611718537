"""The reward registry: every reward name a user can type resolves here, and only here.

A recipe's reward `name` resolves, in this order, as:
  1. a built-in from the `rewards/` folder (`accuracy`, `format`, ...; `grpo-cli rewards ls` lists them),
  2. an installed plugin registered in the entry-point group `grpo_cli.rewards` by another distribution,
  3. `path/to/file.py:attr` (relative to the recipe),
  4. `package.module:attr` (importable),
  5. a reward model: `model:<Hub id or dir>`, or a local directory holding a sequence-classification model.

A reward follows TRL's contract, `fn(prompts, completions, **columns) -> list[float | None]`. A function gets the
recipe's `args` bound as keyword arguments; a class gets them in its constructor and the instance is called.
The dataset columns a reward reads are its parameters without a default, the values of its `*_column`
parameters, and anything it lists in a `required_columns` attribute; `validate` checks them before training.

`RewardCall` wraps each reward for the trainers: it checks every result (count, type, NaN), applies the entry's
`on_error` policy and `timeout`, and reports its mean score, error count and time through TRL's `log_metric`.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli._paths import REWARDS_DIR
from grpo_cli.errors import UserError

ENTRY_POINT_GROUP = "grpo_cli.rewards"
MODEL_PREFIX = "model:"
# Keyword arguments TRL passes to every reward besides the dataset columns.
TRAINER_KWARGS = {
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
}


@dataclass
class RewardSpec:
    """A reward the registry can resolve, before its arguments are bound."""

    name: str
    origin: str  # "built-in", "plugin (dist)", "file", "module", "reward model"
    load: Callable[[], Any] = field(repr=False)

    @functools.cached_property
    def target(self) -> Any:
        return self.load()

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.target) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The arguments a recipe can set in `args`."""
        sig = _signature(self.target.__init__ if inspect.isclass(self.target) else self.target)
        return {
            name: p
            for name, p in sig.parameters.items()
            if name not in TRAINER_KWARGS | {"self"} and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }


def _signature(obj) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return inspect.Signature()


def _registry_name(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__).removesuffix("_reward")


@functools.cache
def builtin_rewards() -> dict[str, RewardSpec]:
    specs = {}
    for path in sorted(REWARDS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"grpo_cli.builtin_rewards.{path.stem}")
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            name = _registry_name(obj)
            specs[name] = RewardSpec(name, "built-in", functools.partial(lambda o: o, obj))
    return specs


def installed_plugins() -> dict[str, RewardSpec]:
    specs = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        specs[ep.name] = RewardSpec(ep.name, f"plugin ({dist})", functools.partial(_load_entry_point, ep))
    return specs


def _load_entry_point(ep):
    try:
        return ep.load()
    except Exception as err:
        raise UserError(f"reward plugin {ep.name!r} ({ep.value}) failed to import: {_one_line(err)}") from err


def available() -> dict[str, RewardSpec]:
    """Every reward that can be named without a path: built-ins, then installed plugins."""
    return {**installed_plugins(), **builtin_rewards()}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load_file_attr(file: str, attr: str) -> Any:
    path = Path(file).expanduser()
    if not path.is_file():
        raise UserError(f"reward file not found: {path}")
    module_name = f"grpo_cli_user_rewards.{path.stem}_{abs(hash(str(path.resolve())))}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # so classes defined there pickle
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise UserError(f"reward file {path} failed to import: {_one_line(err)}") from err
    return _attr(sys.modules[module_name], attr, str(path))


def _load_module_attr(module_name: str, attr: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise UserError(
                f"reward module {module_name!r} not found (is it installed or on PYTHONPATH?)"
            ) from err
        raise UserError(f"reward module {module_name!r} failed to import: {_one_line(err)}") from err
    except Exception as err:
        raise UserError(f"reward module {module_name!r} failed to import: {_one_line(err)}") from err
    return _attr(module, attr, module_name)


def _attr(module, attr: str, where: str) -> Any:
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UserError(
            f"{where} has no {attr!r}{_did_you_mean(attr, public)}; it defines: {', '.join(public)}"
        )
    return getattr(module, attr)


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def is_reward_model(name: str) -> bool:
    return name.startswith(MODEL_PREFIX) or (Path(name).is_dir() and (Path(name) / "config.json").is_file())


def find(name: str) -> RewardSpec:
    """Resolve a reward name (see the module docstring for the order)."""
    known = available()
    if name in known:
        return known[name]
    if is_reward_model(name):
        path = name.removeprefix(MODEL_PREFIX)
        return RewardSpec(Path(path).name or path, "reward model", functools.partial(lambda p: p, path))
    if ":" in name:
        where, attr = name.rsplit(":", 1)
        if where.endswith(".py"):
            return RewardSpec(attr, "file", functools.partial(_load_file_attr, where, attr))
        return RewardSpec(attr, "module", functools.partial(_load_module_attr, where, attr))
    raise UserError(
        f"unknown reward {name!r}{_did_you_mean(name, known)}; looked in the built-ins, the installed plugins "
        f"(entry points {ENTRY_POINT_GROUP!r}), and for path.py:attr or module:attr. "
        f"Available: {', '.join(sorted(known))} (see `grpo-cli rewards ls`)"
    )


# ---- binding a recipe entry ----


@dataclass
class BoundReward:
    """A recipe entry resolved and its arguments bound: ready to call, or a reward model path."""

    name: str  # the name metrics use: the entry's name for built-ins and plugins, the attribute otherwise
    entry: Any  # the RewardEntry
    spec: RewardSpec
    fn: Callable | None  # None for a reward model
    model_path: str | None = None

    @property
    def columns(self) -> list[str]:
        return [] if self.fn is None else required_columns(self.fn)


def bind(entry, label: str) -> BoundReward:
    """Resolve a recipe reward entry and bind its `args`; errors name `label` (e.g. "rewards[0]")."""
    try:
        spec = find(entry.name)
        target = spec.target
    except UserError as err:
        raise UserError(f"{label}: {err}") from err
    if spec.origin == "reward model":
        if entry.args:
            raise UserError(f"{label} ({entry.name}): a reward model takes no args")
        return BoundReward(_registry_name_for(entry, spec), entry, spec, None, model_path=target)
    if not callable(target):
        raise UserError(
            f"{label} ({entry.name}): {target!r} is not callable; a reward is a function or a class"
        )
    _check_args(spec, entry.args, label, entry.name)
    try:
        fn = target(**entry.args) if inspect.isclass(target) else _bind_function(target, entry.args)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{label} ({entry.name}): bad args {entry.args}: {_one_line(err)}") from err
    return BoundReward(_registry_name_for(entry, spec), entry, spec, fn)


def _registry_name_for(entry, spec: RewardSpec) -> str:
    return entry.name if spec.origin == "built-in" or spec.origin.startswith("plugin") else spec.name


def _bind_function(fn: Callable, args: dict) -> Callable:
    if not args:
        return fn
    bound = functools.partial(fn, **args)
    functools.update_wrapper(bound, fn)
    return bound


def _check_args(spec: RewardSpec, args: dict, label: str, name: str) -> None:
    params = spec.parameters()
    accepts_any = inspect.isclass(spec.target) and any(
        p.kind == p.VAR_KEYWORD for p in _signature(spec.target.__init__).parameters.values()
    )
    for key in args:
        if key not in params and not accepts_any:
            valid = ", ".join(params) or "none"
            raise UserError(
                f"{label} ({name}): unknown argument {key!r}{_did_you_mean(key, params)}; its arguments: {valid}"
            )
    if inspect.isclass(spec.target):
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty and n not in args and p.kind != p.POSITIONAL_ONLY
        ]
        if missing:
            raise UserError(f"{label} ({name}): missing argument(s) {', '.join(missing)} in args")


def required_columns(fn: Callable) -> list[str]:
    """The dataset columns a bound reward reads (see the module docstring)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    bound = fn.keywords if isinstance(fn, functools.partial) else {}
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else type(target).__call__
    columns = []
    for name, p in _signature(call).parameters.items():
        if name in TRAINER_KWARGS | {"self"} or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in bound:
            continue
        if p.default is p.empty:
            columns.append(name)
        elif name.endswith("_column") and isinstance(p.default, str):
            columns.append(p.default)
    for name, value in bound.items():
        if name.endswith("_column") and isinstance(value, str):
            columns.append(value)
    for obj in (target, fn):
        for name, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
            if name.endswith("_column") and isinstance(value, str):
                columns.append(value)
    columns += list(getattr(target, "required_columns", ()) or ())
    return list(dict.fromkeys(columns))


# ---- calling rewards safely ----


class RewardError(UserError):
    """A reward misbehaved during a run (raised, timed out, returned a bad value) and its policy is `fail`."""


class RewardCall:
    """A bound reward as the trainers call it: TRL's contract, checked results, the entry's error policy."""

    def __init__(self, bound: BoundReward):
        self.fn = bound.fn
        self.__name__ = bound.name  # TRL logs rewards/<__name__>/mean
        self.on_error = bound.entry.on_error
        self.timeout = bound.entry.timeout
        self._accepts = _accepted_kwargs(bound.fn)
        self._pool = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

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
        call_kwargs = {k: v for k, v in kwargs.items() if self._accepts is None or k in self._accepts}
        try:
            raw = self._invoke(prompts, completions, call_kwargs)
        except Exception as err:
            problem = f"raised {_one_line(err)}" if not isinstance(err, TimeoutError) else str(err)
            return self._fail_all(problem, prompts, completions)
        if not isinstance(raw, list | tuple) or len(raw) != len(completions):
            got = f"{len(raw)} values" if isinstance(raw, list | tuple) else f"a {type(raw).__name__}"
            return self._fail_all(f"returned {got} for {len(completions)} completions", prompts, completions)
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
        if self.timeout is None:
            return self.fn(prompts=prompts, completions=completions, **kwargs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"reward-{self.__name__}"
            )
        future = self._pool.submit(self.fn, prompts=prompts, completions=completions, **kwargs)
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            # The stuck call cannot be killed; abandon its thread and give the next batch a fresh one.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise TimeoutError(f"ran over its timeout of {self.timeout:g} s") from None

    def _fail_all(self, problem: str, prompts, completions):
        if self.on_error == "fail":
            self._raise(problem, prompts[0] if prompts else "", completions[0] if completions else "")
        value = 0.0 if self.on_error == "zero" else None
        return [value] * len(completions), len(completions)

    def _raise(self, problem: str, prompt, completion):
        raise RewardError(
            f"reward {self.__name__!r} {problem}\n  prompt: {_short(prompt)}\n  completion: {_short(completion)}\n"
            f"  (set on_error: zero or skip on this reward to score such cases 0 or None and go on)"
        )


def _bad_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            float(value)  # numpy and torch scalars
        except (TypeError, ValueError):
            return f"a non-number {value!r}"
    if math.isnan(float(value)):
        return "NaN"
    return None


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _accepted_kwargs(fn: Callable) -> set[str] | None:
    """The keyword names `fn` accepts, or None when it takes **kwargs."""
    call = fn if inspect.isfunction(fn) or isinstance(fn, functools.partial) else type(fn).__call__
    params = _signature(call).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


# ---- the set of rewards a recipe names ----


def bind_all(entries) -> list[BoundReward]:
    """Bind every reward entry of a recipe; every problem is reported together."""
    bound, problems = [], []
    for i, entry in enumerate(entries):
        try:
            bound.append(bind(entry, f"rewards[{i}]"))
        except UserError as err:
            problems.append(str(err))
    names = [b.name for b in bound]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"rewards: {', '.join(duplicates)} listed twice; metrics need distinct names")
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else "\n".join(problems), problems)
    return bound


def score_table(
    bound: list[BoundReward], prompts: list, completions: list, columns: dict[str, list]
) -> list[list[float | None]]:
    """Each function reward's scores (one list per reward) for a batch, through the same checks as training."""
    return [RewardCall(b).score(prompts, completions, columns)[0] for b in bound if b.fn is not None]


def weighted_total(bound: list[BoundReward], table: list[list[float | None]]) -> list[float]:
    """The weighted sum per completion, skipping None (as TRL's nansum does)."""
    weights = [b.entry.weight for b in bound if b.fn is not None]
    return [
        sum(w * s for w, s in zip(weights, col, strict=True) if s is not None)
        for col in zip(*table, strict=True)
    ]
