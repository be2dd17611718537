"""A recipe's reward entries: names resolved through the reward registry, their `args` bound.

A reward name resolves as `registry` says (built-ins from the `rewards/` folder, installed plugins in the
entry-point group `grpo_cli.rewards`, `file.py:attr`, `module:attr`), and also as a reward model: `model:<Hub id
or dir>`, or a local directory holding a sequence-classification model (tried before the file and module forms).

A reward follows TRL's contract, `fn(prompts, completions, **columns) -> list[float | None]`. A function gets the
recipe's `args` bound as keyword arguments; a class gets them in its constructor and the instance is called; a
factory (a function without a `completions` parameter, like TRL's `get_repetition_penalty_reward`) is called once
with them and what it returns is the reward. A reward whose module imports an optional dependency only when it is
installed (TRL's `accuracy_reward` and `math_verify`) is refused at binding when that dependency is missing
(`optional_deps`). The dataset columns a reward reads (`signatures.required_columns`) are checked by `validate`.

Calling what is bound (timeouts, result checks, totals) is `grpo_cli.scoring`'s job; reward models become
callable in `grpo_cli.reward_models`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_cli._paths import REWARDS_DIR
from grpo_cli.errors import UserError, describe, shorten
from grpo_cli.optional_deps import missing_optional_modules
from grpo_cli.registry import PluginSpec, Registry
from grpo_cli.signatures import (
    TRAINER_KWARGS,
    accepted_kwargs,
    bind_function,
    check_args,
    is_factory,
    required_columns,
)

ENTRY_POINT_GROUP = "grpo_cli.rewards"
MODEL_PREFIX = "model:"


def _registry_name(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__).removesuffix("_reward")


def builtin_rewards() -> dict[str, PluginSpec]:
    """The rewards of the `rewards/` folder: each module's `__all__`, named without a `_reward` suffix."""
    specs = {}
    for path in sorted(REWARDS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = importlib.import_module(f"grpo_cli.builtin_rewards.{path.stem}")
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            name = _registry_name(obj)
            source = f"{module.__name__}:{attr}"
            load = functools.partial(lambda o: o, obj)
            specs[name] = PluginSpec(name, "built-in", load, name, source, reserved=TRAINER_KWARGS)
    return specs


REWARDS = Registry(
    "reward",
    ENTRY_POINT_GROUP,
    builtin_rewards,
    builtin_place=str(REWARDS_DIR),
    other_names="path/to/file.py:function, package.module:function or model:<Hub id or dir>",
    listing="grpo-cli rewards ls",
    reserved=TRAINER_KWARGS,
)


def is_reward_model(name: str) -> bool:
    return name.startswith(MODEL_PREFIX) or (Path(name).is_dir() and (Path(name) / "config.json").is_file())


def find(name: str) -> PluginSpec:
    """Resolve a reward name: a built-in or installed plugin, a reward model, a file or a module (see `registry`)."""
    if is_reward_model(name) and name not in REWARDS.available():
        path = name.removeprefix(MODEL_PREFIX)
        if not path:
            raise UserError("model: needs a Hub id or a local directory, e.g. model:./my-reward-model")
        load = functools.partial(lambda p: p, path)
        return PluginSpec(Path(path).name or path, "reward model", load, None, path, reserved=TRAINER_KWARGS)
    return REWARDS.find(name, _path_hint)


def _path_hint(name: str) -> str | None:
    if Path(name).is_dir():
        return (
            f"; {name} is a directory without config.json: a reward model directory holds the model's "
            "config.json and weights"
        )
    return None


@dataclass
class BoundReward:
    """A recipe entry resolved and its arguments bound: ready to call, or a reward model path."""

    name: str  # the name metrics use: the entry's name for built-ins and plugins, the attribute otherwise
    entry: Any  # the RewardEntry
    spec: PluginSpec
    fn: Callable | None  # None for a reward model, until reward_models.load_reward_models loads it
    model_path: str | None = None
    factory: bool = False  # `fn` is what a factory returned when called with the entry's args

    @property
    def columns(self) -> list[str]:
        """The dataset columns this reward reads, as its arguments say."""
        if self.fn is None:
            return []
        columns = required_columns(self.fn)
        if inspect.isclass(self.spec.target) or self.factory:  # its *_column arguments, given or default
            for name, p in self.spec.parameters().items():
                value = self.entry.args.get(name, p.default)
                if name.endswith("_column") and isinstance(value, str):
                    columns.append(value)
        return list(dict.fromkeys(columns))


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
        if getattr(entry, "isolation", "in_process") == "process":
            raise UserError(
                f"{label} ({entry.name}): isolation: process is for reward functions; a reward model runs in the "
                "training process (remove isolation, or set isolation: in_process)"
            )
        return BoundReward(_registry_name_for(entry, spec), entry, spec, None, model_path=target)
    if not callable(target):
        raise UserError(
            f"{label} ({entry.name}): {target!r} is not callable; a reward is a function or a class"
        )
    factory = is_factory(target)
    constructor = inspect.isclass(target) or factory
    check_args(spec, entry.args, label, entry.name, constructor=constructor)
    try:
        fn = target(**entry.args) if constructor else bind_function(target, entry.args)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{label} ({entry.name}): args {entry.args} rejected: {describe(err)}") from err
    if not callable(fn):
        what = (
            f"calling it with its args returned {shorten(fn, 80)}, not a reward"
            if factory
            else f"an instance of {target.__name__} is not callable (no __call__)"
        )
        raise UserError(f"{label} ({entry.name}): {what}")
    accepts = accepted_kwargs(fn)
    if accepts is not None and "completions" not in accepts:
        made = " (nor does what it returns when called with its args)" if factory else ""
        raise UserError(
            f"{label} ({entry.name}): it takes no `completions` parameter{made}; a reward is "
            "fn(prompts, completions, **columns) -> list[float | None]"
        )
    missing = missing_optional_modules(target if factory else fn)
    if missing:
        modules = (
            f"module {missing[0]!r}, which is"
            if len(missing) == 1
            else f"modules {', '.join(missing)}, which are"
        )
        raise UserError(
            f"{label} ({entry.name}) needs the {modules} not installed: "
            f"pip install {' '.join(m.replace('_', '-') for m in missing)}"
        )
    if spec.origin == "built-in":
        _check_builtin_args(fn, entry, label)
    name = _registry_name_for(entry, spec)
    if factory and isinstance(getattr(fn, "__name__", None), str):
        name = (
            fn.__name__
        )  # the name TRL logs it under: what the factory made, e.g. repetition_penalty_reward
    return BoundReward(name, entry, spec, fn, factory=factory)


def _check_builtin_args(fn: Callable, entry, label: str) -> None:
    """Built-ins check their arguments before scoring anything, so scoring nothing checks them now."""
    try:
        result = fn(prompts=[], completions=[], **{column: [] for column in required_columns(fn)})
    except Exception as err:
        raise UserError(f"{label} ({entry.name}): args {entry.args} rejected: {describe(err)}") from err
    if inspect.iscoroutine(result):  # an async built-in (the judge) checks its args when it is made, not here
        result.close()


def _registry_name_for(entry, spec: PluginSpec) -> str:
    return entry.name if spec.origin == "built-in" or spec.origin.startswith("plugin") else spec.name


def bind_each(entries) -> tuple[list[tuple[int, BoundReward]], list[str]]:
    """Bind every reward entry of a recipe: (index, bound) for the good ones, and every problem found."""
    bound, problems = [], []
    for i, entry in enumerate(entries):
        try:
            bound.append((i, bind(entry, f"rewards[{i}]")))
        except UserError as err:
            problems.append(str(err))
    names = [b.name for _, b in bound]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"rewards: {', '.join(duplicates)} listed twice; metrics need distinct names")
    return bound, problems


def bind_all(entries) -> list[BoundReward]:
    """Bind every reward entry of a recipe, or raise one UserError listing every problem."""
    bound, problems = bind_each(entries)
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else "\n".join(problems), problems)
    return [b for _, b in bound]
