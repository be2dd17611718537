"""Calling tools and environments safely: the one path by which `train` (TRL's tool loop), `eval` and `generate`
(`tool_loop`) run them.

TRL 1.12 turns an exception raised by a tool into `{"error": "<message>"}` sent back to the model, and counts it in
`tools/failure_frequency`; anything else a tool returns is sent as `str(result)`. A guarded tool therefore raises
`ToolFailure` for every fault, with a message written for the model: an exception (SystemExit included), a call
that runs over the entry's `timeout` (the call is abandoned on a daemon thread), a result that is not text (a
number is text enough), or one longer than MAX_RESULT_CHARS. The run goes on; `ToolTally` counts calls and
failures per tool for metrics.jsonl (`tools/<name>/calls`, `tools/<name>/failures`).

Environments are wrapped in a class of the same name whose public methods are the guarded tool methods; TRL keeps
a pool of instances and calls `reset(**row)` before each rollout. A `reset()` that raises follows the entry's
`on_error`: `fail` stops the run with one line; `zero` and `skip` let the rollout go on with every tool answering
the error and `get_reward()` scoring it 0 or None (left out, as TRL does with None).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpo_cli import tool_binding
from grpo_cli.errors import UserError, describe, shorten

MAX_RESULT_CHARS = 10_000  # a tool's answer is read by the model: past this it is a fault, not a result
_FAILURES = (Exception, SystemExit)


class ToolFailure(Exception):
    """A tool call failed; the message is what the model reads (TRL sends `{"error": message}`)."""


class EnvironmentError_(UserError):
    """An environment's reset() or get_reward() raised and its on_error is `fail`."""


@dataclass
class ToolTally:
    """Tool calls and failures per tool since `take()`, and the first failure seen (for a warning)."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reset_failures: int = 0
    first_failure: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, name: str, failure: str | None) -> None:
        with self._lock:
            self.calls[name] += 1
            if failure is not None:
                self.failures[name] += 1
                self.first_failure = self.first_failure or f"{name}: {failure}"

    def take(self) -> dict[str, float]:
        """Metrics for metrics.jsonl since the last call: `tools/<name>/calls`, `/failures`, `tools/reset_failures`."""
        with self._lock:
            row = {}
            for name in sorted(self.calls):
                row[f"tools/{name}/calls"] = float(self.calls[name])
                row[f"tools/{name}/failures"] = float(self.failures.get(name, 0))
            if self.reset_failures:
                row["tools/reset_failures"] = float(self.reset_failures)
            self.calls.clear()
            self.failures.clear()
            self.reset_failures = 0
            return row


def call_with_timeout(fn: Callable, args: tuple, kwargs: dict, timeout: float | None, what: str) -> Any:
    """`fn(*args, **kwargs)`, on a daemon thread when there is a timeout (a call that never returns is abandoned
    and must not keep the process from exiting); an awaitable result is run to its end."""
    from grpo_cli.scoring import _awaited

    if timeout is None:
        return _awaited(fn(*args, **kwargs))
    outcome = {}

    def run():
        try:
            outcome["value"] = _awaited(fn(*args, **kwargs))
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ToolFailure(f"{what} ran over its timeout of {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def as_text(result: Any, name: str) -> str:
    """A tool's result as the text the model reads, or ToolFailure saying why it is not one."""
    if isinstance(result, bool | int | float):
        result = str(result)
    if not isinstance(result, str):
        raise ToolFailure(f"{name} returned {type(result).__name__} {shorten(result, 60)}, not text")
    if len(result) > MAX_RESULT_CHARS:
        raise ToolFailure(
            f"{name} returned {len(result)} characters, more than the {MAX_RESULT_CHARS} allowed"
        )
    return result


def _guarded_call(fn: Callable, name: str, timeout: float | None, tally: ToolTally, args, kwargs) -> str:
    try:
        result = as_text(call_with_timeout(fn, args, kwargs, timeout, f"tool {name!r}"), name)
    except ToolFailure as err:
        tally.note(name, str(err))
        raise
    except _FAILURES as err:
        message = f"{name} raised {describe(err)}"
        tally.note(name, message)
        raise ToolFailure(message) from None
    tally.note(name, None)
    return result


def guard_tool(tool: tool_binding.BoundTool, tally: ToolTally) -> Callable:
    """A bound tool as TRL calls it: same name, signature and docstring (so the same schema), faults raised as
    ToolFailure."""

    @functools.wraps(tool.fn)
    def guarded(*args, **kwargs):
        return _guarded_call(tool.fn, tool.name, tool.entry.timeout, tally, args, kwargs)

    return guarded


def _method_proxy(name: str, probe_method: Callable, timeout: float, tally: ToolTally) -> Callable:
    """A function that, as a method of the wrapper class, calls the wrapped instance's method `name`, guarded;
    its signature (with `self`), annotations and docstring are the original's, so its schema is too."""

    def method(self, *args, **kwargs):
        if self._broken is not None:
            tally.note(name, self._broken)
            raise ToolFailure(f"the environment is unusable: {self._broken}")
        return _guarded_call(getattr(self._inner, name), name, timeout, tally, args, kwargs)

    functools.update_wrapper(method, probe_method)
    del method.__wrapped__  # its own signature below: the original's, with `self` in front
    sig = inspect.signature(probe_method)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(sig.parameters.values())
    if not params or params[0].name != "self":
        params = [self_param, *params]
    method.__signature__ = sig.replace(parameters=params)
    func = getattr(probe_method, "__func__", probe_method)
    # String annotations (`from __future__ import annotations`) resolve in the original's module, not this one.
    module_globals = getattr(func, "__globals__", {})
    method.__annotations__ = {
        k: _resolved(v, module_globals) for k, v in getattr(func, "__annotations__", {}).items()
    }
    return method


def _resolved(hint, module_globals: dict):
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, module_globals)
    except Exception:
        return hint


def guarded_environment(env: tool_binding.BoundEnvironment, tally: ToolTally) -> Callable[[], Any]:
    """A factory for TRL's `environment_factory`: instances of a class named as the user's, wrapping one of theirs,
    with guarded tool methods, an `on_error` reset and get_reward."""
    entry = env.entry
    label = "environment" if env.key is None else f"environment.{env.key}"
    probe_cls = env.spec.target if inspect.isclass(env.spec.target) else type(env.factory())
    methods, _reset, has_reward = tool_binding.environment_methods(probe_cls)

    def __init__(self):
        self._inner = env.factory()
        self._broken = None

    def reset(self, **row):
        self._broken = None
        try:
            observation = call_with_timeout(self._inner.reset, (), row, entry.timeout, f"{label} reset()")
        except _FAILURES as err:
            problem = f"reset() raised {describe(err)}" if not isinstance(err, ToolFailure) else str(err)
            if entry.on_error == "fail":
                raise EnvironmentError_(
                    f"{label} ({entry.name}): {problem}; row: {shorten(row, 120)} (set on_error: zero or skip on "
                    "the environment to go on without it)"
                ) from None
            with tally._lock:
                tally.reset_failures += 1
                tally.first_failure = tally.first_failure or f"{label}: {problem}"
            self._broken = problem
            return None
        return observation

    namespace = {"__init__": __init__, "reset": reset, "__doc__": probe_cls.__doc__}
    if has_reward:

        def get_reward(self):
            if self._broken is not None:
                return 0.0 if entry.on_error == "zero" else None
            try:
                return call_with_timeout(
                    self._inner.get_reward, (), {}, entry.timeout, f"{label} get_reward()"
                )
            except _FAILURES as err:
                if entry.on_error == "fail":
                    raise EnvironmentError_(
                        f"{label} ({entry.name}): get_reward() raised {describe(err)}"
                    ) from None
                return 0.0 if entry.on_error == "zero" else None

        namespace["get_reward"] = get_reward
    for name, method in methods.items():
        namespace[name] = _method_proxy(name, method, entry.timeout, tally)
    wrapper = type(probe_cls.__name__, (), namespace)
    wrapper.__module__ = probe_cls.__module__
    return wrapper


@dataclass
class Toolbox:
    """What TRL's GRPOTrainer is given for a recipe's tools and environments, and the tally they count into."""

    tools: list[Callable]
    environment_factory: Callable | dict[str, Callable] | None
    tally: ToolTally


def toolbox(agent: tool_binding.Agent) -> Toolbox:
    tally = ToolTally()
    tools = [guard_tool(t, tally) for t in agent.tools]
    factories = {e.key: guarded_environment(e, tally) for e in agent.environments}
    if not factories:
        factory = None
    elif agent.multi:
        factory = factories
    else:
        factory = factories[None]
    return Toolbox(tools, factory, tally)


# ---- the tokenizer: a chat template that renders tool calls, and a parser for them ----


def prepare_tokenizer(tokenizer, template: str | None) -> list[str]:
    """Give `tokenizer` the recipe's `tool_template` (a chat template TRL ships) and TRL's tool-call parser for its
    template; the problems found, as one line each (checked by `train` before the run directory is touched)."""
    from trl import chat_template_utils as ctu

    from grpo_cli.recipe import TOOL_TEMPLATES

    known = ", ".join(TOOL_TEMPLATES)
    if template is not None:
        tokenizer.chat_template = getattr(ctu, f"{template}_chat_template")
    if not ctu.supports_tool_calling(tokenizer):
        what = (
            "has no chat template"
            if tokenizer.chat_template is None
            else "cannot render a tool call and its result"
        )
        return [
            f"tool_template: the tokenizer {what}; set tool_template: to one of TRL's templates ({known}), or "
            "give the model a template that renders assistant tool_calls and tool messages"
        ]
    if (
        getattr(tokenizer, "response_template", None) is None
        and getattr(tokenizer, "response_schema", None) is None
    ):
        try:
            ctu.add_response_schema(tokenizer)
        except ValueError:
            return [
                "tool_template: TRL has no parser for the tool calls of the tokenizer's chat template; set "
                f"tool_template: to one of the templates it knows ({known}) (it replaces the model's template)"
            ]
    return []
