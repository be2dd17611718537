"""A recipe's tools and environments: names resolved through their registries, `args` bound, schemas checked.

Names resolve exactly as reward names do (`registry`): a built-in (`grpo_cli/builtin_tools/`, listed by
`grpo-cli tools ls`), an installed plugin (entry-point groups `grpo_cli.tools` and `grpo_cli.environments`),
`path/to/file.py:attr`, `package.module:attr`.

A tool is a function the model calls by name: TRL sends the model the JSON schema transformers' `get_json_schema`
makes from its signature and docstring (every argument type-hinted and described under `Args:`), so a tool is
refused here when that fails. The recipe's `args` are bound and disappear from the schema: the model never sees
or sets them. An environment is a class (or a function) called with its `args` to make one instance per rollout;
the instance has `reset(**row)`, tool methods (its public methods) and optionally `get_reward()`.

Calling them safely (timeouts, errors reported to the model) is `grpo_cli.tool_calls`'s job.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpo_cli import builtin_tools
from grpo_cli.errors import UserError, describe
from grpo_cli.registry import PluginSpec, Registry
from grpo_cli.signatures import check_args

ENVIRONMENT_COLUMN = "environment"  # TRL's: the dataset column choosing each row's environment by name
OWN_METHODS = ("reset", "get_reward")  # an environment's methods that are not tools


def builtin_tool_specs() -> dict[str, PluginSpec]:
    """The functions of `grpo_cli/builtin_tools/`: each module's `__all__`."""
    specs = {}
    for info in sorted(pkgutil.iter_modules(builtin_tools.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{builtin_tools.__name__}.{info.name}")
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            load = functools.partial(lambda o: o, obj)
            specs[attr] = PluginSpec(attr, "built-in", load, attr, f"{module.__name__}:{attr}")
    return specs


_OTHER_NAMES = "path/to/file.py:function or package.module:function"
TOOLS = Registry(
    "tool",
    "grpo_cli.tools",
    builtin_tool_specs,
    builtin_place="grpo_cli/builtin_tools",
    other_names=_OTHER_NAMES,
    listing="grpo-cli tools ls",
)
ENVIRONMENTS = Registry(
    "environment",
    "grpo_cli.environments",
    dict,  # none built in
    builtin_place="none built in",
    other_names="path/to/file.py:Class or package.module:Class",
    listing="grpo-cli tools ls",
)


def tool_schema(fn: Callable) -> dict:
    """The JSON schema transformers sends the model for `fn` (what `tools ls --show` prints)."""
    from transformers.utils import get_json_schema  # here: a recipe without tools never needs transformers

    return get_json_schema(fn)


def schema_problem(fn: Callable, label: str) -> str | None:
    """Why transformers cannot describe `fn` as a tool, on one line, or None."""
    try:
        tool_schema(fn)
    except Exception as err:
        return (
            f"{label}: transformers cannot describe it to the model ({describe(err)}); a tool needs a type hint on "
            "every argument and a docstring with an `Args:` line for each (Google style)"
        )
    return None


def bind_arguments(fn: Callable, args: dict) -> Callable:
    """`fn` with `args` bound, as a function whose signature, annotations and name hide them (the model sees the
    rest); `fn` itself when there are none."""
    if not args:
        return fn

    @functools.wraps(fn)
    def bound(*a, **kw):
        return fn(*a, **{**kw, **args})

    sig = inspect.signature(fn)
    bound.__signature__ = sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in args])
    bound.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k not in args}
    # `__wrapped__` stays: typing.get_type_hints follows it for fn's module (string annotations resolve there).
    return bound


@dataclass
class BoundTool:
    name: str  # what the model calls it: the function's name
    entry: Any  # the ToolEntry
    spec: PluginSpec
    fn: Callable  # the args bound


def bind_tool(entry, label: str) -> BoundTool:
    """Resolve a `tools:` entry, bind its `args`, and check transformers can describe it."""
    try:
        spec = TOOLS.find(entry.name)
        target = spec.target
    except UserError as err:
        raise UserError(f"{label}: {err}") from err
    if inspect.isclass(target) or not callable(target):
        raise UserError(
            f"{label} ({entry.name}): {target!r} is not a function; a tool is a function with type hints and a "
            "docstring (several tools sharing state belong in an environment's methods)"
        )
    check_args(spec, entry.args, label, entry.name, constructor=False)
    fn = bind_arguments(target, entry.args)
    problem = schema_problem(fn, f"{label} ({entry.name})")
    if problem:
        raise UserError(problem)
    return BoundTool(getattr(target, "__name__", spec.name), entry, spec, fn)


@dataclass
class BoundEnvironment:
    key: str | None  # the value of the dataset's `environment` column that picks it; None for a single one
    entry: Any  # the EnvironmentEntry
    spec: PluginSpec
    factory: Callable[[], Any]  # makes one instance, its args bound
    methods: list[str] = field(default_factory=list)  # its tools
    has_reward: bool = False


def environment_methods(obj) -> tuple[dict[str, Callable], bool, bool]:
    """An environment's (class or instance) tool methods by name, whether it has `reset`, whether `get_reward`."""
    members = dict(inspect.getmembers(obj, callable))
    tools = {
        n: m
        for n, m in members.items()
        if not n.startswith("_") and n not in OWN_METHODS and not inspect.isclass(m)
    }
    return tools, "reset" in members, "get_reward" in members


def bind_environment(entry, label: str, key: str | None = None) -> BoundEnvironment:
    """Resolve an `environment:` entry and check it without running it when it is a class (a function that
    makes environments is called once, to look at what it makes)."""
    try:
        spec = ENVIRONMENTS.find(entry.name)
        target = spec.target
    except UserError as err:
        raise UserError(f"{label}: {err}") from err
    if not callable(target):
        raise UserError(
            f"{label} ({entry.name}): {target!r} is not a class or a function making environments"
        )
    check_args(spec, entry.args, label, entry.name, constructor=True)
    factory = functools.partial(target, **entry.args)
    if inspect.isclass(target):
        probe = target
    else:
        try:
            probe = factory()
        except Exception as err:
            raise UserError(f"{label} ({entry.name}): making an environment raised {describe(err)}") from err
    tools, has_reset, has_reward = environment_methods(probe)
    if not has_reset:
        raise UserError(
            f"{label} ({entry.name}): an environment needs a reset(self, **row) method (it is called before each "
            "rollout with the dataset row; return None or text to append to the prompt)"
        )
    for name, method in tools.items():
        problem = schema_problem(method, f"{label} ({entry.name}.{name})")
        if problem:
            raise UserError(problem)
    return BoundEnvironment(key, entry, spec, factory, sorted(tools), has_reward)


@dataclass
class Agent:
    """A recipe's tools and environments bound, and every problem found."""

    tools: list[BoundTool] = field(default_factory=list)
    environments: list[BoundEnvironment] = field(default_factory=list)
    multi: bool = False  # `environment:` is a mapping: the dataset's `environment` column picks one per row
    problems: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return bool(self.tools or self.environments)

    @property
    def owns_reward(self) -> bool:
        """Every environment scores its rollouts (`get_reward`): the recipe needs no reward."""
        return bool(self.environments) and all(e.has_reward for e in self.environments)


def bind_agent(recipe) -> Agent:
    """Bind a recipe's `tools:` and `environment:`, collecting every problem (as `validate` lists them)."""
    agent = Agent()
    for i, entry in enumerate(recipe.tools or []):
        try:
            agent.tools.append(bind_tool(entry, f"tools[{i}]"))
        except UserError as err:
            agent.problems.append(str(err))
    env = recipe.environment
    agent.multi = isinstance(env, dict)
    entries = env.items() if agent.multi else [(None, env)] if env is not None else []
    for key, entry in entries:
        label = "environment" if key is None else f"environment.{key}"
        try:
            agent.environments.append(bind_environment(entry, label, key))
        except UserError as err:
            agent.problems.append(str(err))
    if agent.multi and not env:
        agent.problems.append("environment: an empty mapping; name at least one environment, or remove it")
    names = [t.name for t in agent.tools]
    for e in agent.environments:
        clash = sorted(set(names) & set(e.methods))
        if clash:
            where = "environment" if e.key is None else f"environment.{e.key}"
            agent.problems.append(
                f"{where}: method {clash[0]!r} has the name of a tool in `tools:`; the model could not tell them apart"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        agent.problems.append(f"tools: {', '.join(duplicates)} listed twice; the model calls tools by name")
    if not recipe.rewards and agent.environments and not agent.problems and not agent.owns_reward:
        lacking = next(e for e in agent.environments if not e.has_reward)
        where = "environment" if lacking.key is None else f"environment.{lacking.key}"
        agent.problems.append(
            f"rewards: none given, and {where} ({lacking.entry.name}) has no get_reward() method; add a reward, "
            "or give the environment get_reward(self) -> float"
        )
    return agent


def bind_all(recipe) -> Agent:
    """`bind_agent`, raising one UserError with every problem."""
    agent = bind_agent(recipe)
    if agent.problems:
        raise UserError("\n".join(agent.problems), agent.problems)
    return agent


def column_problems(agent: Agent, columns: list[str]) -> list[str]:
    """A mapping of environments needs the dataset column that picks one per row."""
    if agent.multi and ENVIRONMENT_COLUMN not in columns:
        return [
            f"environment: a mapping of environments ({', '.join(e.key for e in agent.environments)}) needs a "
            f"dataset column {ENVIRONMENT_COLUMN!r} naming each row's; columns: {', '.join(columns)}"
        ]
    return []
