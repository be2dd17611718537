"""Optional dependencies a plugin's module imports only when they are installed, found without importing them."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any


def missing_optional_modules(reward: Any) -> list[str]:
    """Modules a reward needs but its module imported only if installed, and which are not installed.

    TRL's `trl.rewards.accuracy_rewards` imports `math_verify` under `if is_math_verify_available():` and raises
    on the first call without it. Found without calling anything: the module's source is read for imports under
    an `if` whose test calls an `is_..._available` function, and the reward's code (and the functions and classes
    of its module it uses, transitively) is searched for the names those imports bind. Nothing is imported.
    """
    target = reward.func if isinstance(reward, functools.partial) else reward
    if not (inspect.isfunction(target) or inspect.isclass(target)):
        target = type(target)
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    if module is None:
        return []
    guarded = _guarded_imports(module)
    missing = {name: top for name, top in guarded.items() if _not_installed(top)}
    if not missing:
        return []
    used = _names_used(target, module)
    return sorted({top for name, top in missing.items() if name in used})


@functools.cache
def _guarded_imports_of(filename: str) -> dict[str, str]:
    import ast

    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    names = {}
    for node in tree.body:
        if not isinstance(node, ast.If):
            continue
        test = node.test
        called = test.func if isinstance(test, ast.Call) else None
        called_name = getattr(called, "id", None) or getattr(called, "attr", None) or ""
        if not (called_name.startswith("is_") and called_name.endswith("_available")):
            continue
        for statement in (inner for part in node.body for inner in ast.walk(part)):  # not the `else:`
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                for alias in statement.names:
                    names[alias.asname or alias.name] = statement.module.split(".")[0]
    return names


def _guarded_imports(module) -> dict[str, str]:
    """{name bound: top-level module} for the imports of `module` guarded by an `is_..._available()` test."""
    filename = getattr(module, "__file__", None)
    return _guarded_imports_of(filename) if filename and filename.endswith(".py") else {}


def _not_installed(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True


def _names_used(target: Any, module) -> set[str]:
    """Global names the code of `target` uses, following the functions and classes of `module` it reaches."""
    seen, used, todo = set(), set(), [target]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        codes = []
        if inspect.isfunction(obj):
            codes.append(obj.__code__)
        elif inspect.isclass(obj):
            codes += [v.__code__ for v in vars(obj).values() if inspect.isfunction(v)]
        while codes:
            code = codes.pop()
            used.update(code.co_names)
            codes += [c for c in code.co_consts if inspect.iscode(c)]
            for name in code.co_names:
                value = getattr(module, name, None)
                if (
                    inspect.isfunction(value) or inspect.isclass(value)
                ) and value.__module__ == module.__name__:
                    todo.append(value)
    return used
