"""What a reward's signature says, read without calling it: the args a recipe may set, the keywords it takes,
the dataset columns it reads.

The dataset columns a reward reads are its parameters without a default, the values of its `*_column`
parameters (a class's constructor ones included), and anything it lists in a `required_columns` attribute.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from grpo_cli.errors import UserError, did_you_mean

# Keyword arguments TRL passes to every reward besides the dataset columns.
TRAINER_KWARGS = frozenset(
    {
        "prompts",
        "completions",
        "completion_ids",
        "trainer_state",
        "log_extra",
        "log_metric",
        "environments",
    }
)


def signature(obj) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return inspect.Signature()


def own_parameters(obj, reserved: frozenset[str] | set[str] = TRAINER_KWARGS) -> dict[str, inspect.Parameter]:
    """Named parameters of `obj`, without `self`, the `reserved` ones (what the trainer passes) or `*args`/`**kwargs`."""
    return {
        name: p
        for name, p in signature(obj).parameters.items()
        if name not in reserved | {"self"} and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def is_factory(target: Any) -> bool:
    """A reward factory: a function that takes none of the trainer's arguments (`completions`, `prompts`, ...) nor
    **kwargs, and returns a reward when called with the recipe entry's `args`, as TRL's
    `get_repetition_penalty_reward(ngram_size, max_penalty)` does."""
    if not (inspect.isfunction(target) or isinstance(target, functools.partial)):
        return False
    accepts = accepted_kwargs(target)
    # One that takes what the trainer passes (prompts, completion_ids, ...) is a reward missing `completions`.
    return accepts is not None and not accepts & TRAINER_KWARGS


def bind_function(fn: Callable, args: dict) -> Callable:
    """`fn` with `args` bound as keywords, keeping its name and docstring."""
    if not args:
        return fn
    bound = functools.partial(fn, **args)
    functools.update_wrapper(bound, fn)
    return bound


def check_args(spec, args: dict, label: str, name: str, constructor: bool) -> None:
    """For a registry's `spec`: every key of `args` is a parameter; for a class or a factory (`constructor`), every required one is set."""
    params = spec.parameters()
    init = spec.target.__init__ if inspect.isclass(spec.target) else spec.target
    accepts_any = constructor and any(p.kind == p.VAR_KEYWORD for p in signature(init).parameters.values())
    described = ", ".join(n if p.default is p.empty else f"{n}={p.default!r}" for n, p in params.items())
    for key in args:
        if key not in params and not accepts_any:
            raise UserError(
                f"{label} ({name}): unknown argument {key!r}{did_you_mean(key, params, n=3)}; "
                f"its arguments: {described or 'none'}"
            )
    if constructor:
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty and n not in args and p.kind != p.POSITIONAL_ONLY
        ]
        if missing:
            raise UserError(
                f"{label} ({name}): missing argument {', '.join(repr(m) for m in missing)}: set it in args; "
                f"its arguments: {described}"
            )


def required_columns(fn: Callable) -> list[str]:
    """The dataset columns a reward reads (see the module docstring).

    `fn` is a bound reward (a function, a partial of one, a class instance) or an unbound class.
    """
    target = fn.func if isinstance(fn, functools.partial) else fn
    bound = fn.keywords if isinstance(fn, functools.partial) else {}
    columns = []
    if inspect.isclass(target):
        for name, p in own_parameters(target.__init__).items():
            if name.endswith("_column") and isinstance(p.default, str):
                columns.append(p.default)
        call = target.__call__
    elif inspect.isfunction(target) or inspect.ismethod(target):
        call = target
    else:
        call = type(target).__call__
    for name, p in own_parameters(call).items():
        if name in bound:
            continue
        if p.default is p.empty:
            columns.append(name)
        elif name.endswith("_column") and isinstance(p.default, str):
            columns.append(p.default)
    for name, value in bound.items():
        if name.endswith("_column") and isinstance(value, str):
            columns.append(value)
    if not inspect.isclass(target) and not inspect.isfunction(target):
        for name, value in vars(target).items() if hasattr(target, "__dict__") else ():
            if name.endswith("_column") and isinstance(value, str):
                columns.append(value)
    declared = getattr(target, "required_columns", None) or ()
    if isinstance(declared, str):
        declared = [declared]
    if isinstance(declared, list | tuple | set | frozenset):  # not a property seen on the class
        columns += [c for c in declared if isinstance(c, str)]
    return list(dict.fromkeys(columns))


def accepted_kwargs(fn: Callable) -> set[str] | None:
    """The keyword names `fn` accepts, or None when it takes **kwargs."""
    call = fn if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, functools.partial) else None
    if call is None:
        call = type(fn).__call__
    params = signature(call).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind != p.POSITIONAL_ONLY}
