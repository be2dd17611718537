"""The reward registry: every reward name a user can type resolves here, and only here.

A recipe's reward `name` resolves, in this order, as:
  1. a built-in from the `rewards/` folder (`accuracy`, `format`, ...; `grpo-cli rewards ls` lists them),
  2. an installed plugin registered in the entry-point group `grpo_cli.rewards` by another distribution,
  3. `path/to/file.py:attr` (relative to the recipe),
  4. `package.module:attr` (importable; the current directory is tried last, as `python -m` would),
  5. a reward model: `model:<Hub id or dir>`, or a local directory holding a sequence-classification model.

A reward follows TRL's contract, `fn(prompts, completions, **columns) -> list[float | None]`. A function gets the
recipe's `args` bound as keyword arguments; a class gets them in its constructor and the instance is called; a
factory (a function without a `completions` parameter, like TRL's `get_repetition_penalty_reward`) is called once
with them and what it returns is the reward. A reward whose module imports an optional dependency only when it is
installed (TRL's `accuracy_reward` and `math_verify`) is refused at binding when that dependency is missing.
The dataset columns a reward reads are its parameters without a default, the values of its `*_column`
parameters (a class's constructor ones included), and anything it lists in a `required_columns` attribute;
`validate` checks them before training.

Calling what is bound (timeouts, result checks, reward models, totals) is `grpo_cli.scoring`'s job.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli._paths import REWARDS_DIR
from grpo_cli.errors import UserError, describe, did_you_mean

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
# Reward files are imported as submodules of this (otherwise empty) package, so what they define pickles.
FILE_PACKAGE = "grpo_cli_user_rewards"


@dataclass
class RewardSpec:
    """A reward the registry can resolve, before its arguments are bound."""

    name: str
    origin: str  # "built-in", "plugin (dist version)", "file", "module", "reward model"
    load: Callable[[], Any] = field(repr=False)
    ref: str | None = None  # a name that resolves to this reward again, from any directory
    source: str = ""  # where it is defined: "module:attr" or "path.py:attr"
    dist: str = ""  # for a plugin: the distribution that registers it, "name version"

    @functools.cached_property
    def target(self) -> Any:
        return self.load()

    @property
    def description(self) -> str:
        """The first paragraph of its docstring, on one line."""
        doc = inspect.getdoc(self.target) or ""
        return " ".join(doc.strip().split("\n\n")[0].split())

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The arguments a recipe can set in `args`."""
        return _own_parameters(self.target.__init__ if inspect.isclass(self.target) else self.target)


def _signature(obj) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return inspect.Signature()


def _own_parameters(obj) -> dict[str, inspect.Parameter]:
    """Named parameters of `obj`, without `self`, the trainer's keyword arguments and `*args`/`**kwargs`."""
    return {
        name: p
        for name, p in _signature(obj).parameters.items()
        if name not in TRAINER_KWARGS | {"self"} and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


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
            source = f"{module.__name__}:{attr}"
            specs[name] = RewardSpec(name, "built-in", functools.partial(lambda o: o, obj), name, source)
    return specs


def installed_plugins() -> dict[str, RewardSpec]:
    """Rewards other distributions register in the entry-point group `grpo_cli.rewards`."""
    specs = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in specs:
            continue  # the first on sys.path wins, as for imports
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
        specs[ep.name] = RewardSpec(
            ep.name, f"plugin ({dist})", functools.partial(_load_entry_point, ep), ep.name, ep.value, dist
        )
    return specs


def _load_entry_point(ep):
    module_name = ep.value.split(":")[0].strip()
    try:
        return ep.load()
    except Exception as err:
        dist = f"{ep.dist.name}, " if ep.dist else ""
        raise UserError(
            _import_failure(f"reward plugin {ep.name!r} ({dist}{ep.value})", err, _module_files(module_name))
        ) from err


def available() -> dict[str, RewardSpec]:
    """Every reward that can be named without a path: built-ins, then installed plugins."""
    return {**installed_plugins(), **builtin_rewards()}


# ---- importing user code ----


def _import_failure(what: str, err: BaseException, files: tuple[Callable[[str], bool], Path | None]) -> str:
    """One line: what failed to import, where in the user's code (file and line), and the error.

    `files` tells the user's files (the plugin's module or package) from the rest, and names its main file.
    """
    is_user_file, main_file = files
    where = None
    if isinstance(err, SyntaxError) and err.filename and is_user_file(err.filename):
        where = (err.filename, err.lineno)
    else:
        for frame in traceback.extract_tb(err.__traceback__):
            if is_user_file(frame.filename):
                where = (frame.filename, frame.lineno)  # the innermost one wins
    at = f" ({where[0]}, line {where[1]})" if where else f" ({main_file})" if main_file else ""
    error = f"SyntaxError: {err.msg}" if isinstance(err, SyntaxError) and err.msg else describe(err)
    return f"{what} failed to import{at}: {error}"


def _module_files(module_name: str) -> tuple[Callable[[str], bool], Path | None]:
    """Which files belong to the top-level package or module of `module_name`, and its file (for errors)."""
    try:
        spec = importlib.util.find_spec(module_name.split(".")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return (lambda filename: False), None
    origin = Path(spec.origin).resolve()
    if spec.submodule_search_locations:  # a package: any file in it
        return (lambda filename: Path(filename).resolve().is_relative_to(origin.parent)), origin
    return (lambda filename: Path(filename).resolve() == origin), origin


def _file_module_name(path: Path) -> str:
    # Stable across processes (unlike hash()), distinct for two files with the same name.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"{FILE_PACKAGE}.{stem}_{digest}"


def _load_file_attr(file: str, attr: str) -> Any:
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"reward file not found: {path}")
    if FILE_PACKAGE not in sys.modules:
        package = types.ModuleType(FILE_PACKAGE, "Reward plugin files, imported by grpo_cli.plugins.")
        package.__path__ = []
        sys.modules[FILE_PACKAGE] = package
    module_name = _file_module_name(path)
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before running it, as import does: dataclasses and pickle need it
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise UserError(
                _import_failure("reward file", err, ((lambda f: Path(f).resolve() == path), path))
            ) from err
    return _attr(sys.modules[module_name], attr, str(path))


def _load_module_attr(module_name: str, attr: str) -> Any:
    try:
        module = _import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise UserError(
                f"reward module {module_name!r} not found: no module named {err.name!r} is installed or on "
                f"sys.path, nor in the current directory ({Path.cwd()}); for a file, write path/to/file.py:{attr}"
            ) from err
        raise UserError(
            _import_failure(f"reward module {module_name!r}", err, _module_files(module_name))
        ) from err
    except Exception as err:
        raise UserError(
            _import_failure(f"reward module {module_name!r}", err, _module_files(module_name))
        ) from err
    return _attr(module, attr, f"module {module_name!r}")


def _import_module(module_name: str):
    """Import `module_name`; if it is nowhere on sys.path, try the current directory as `python -m` would.

    The `grpo-cli` console script does not put the current directory on sys.path, so a user's `my_rewards.py`
    next to their recipe would otherwise be found by `python -m grpo_cli` but not by `grpo-cli`.
    """
    top = module_name.split(".")[0]
    cwd = os.getcwd()
    if (
        importlib.util.find_spec(top) is None
        and cwd not in sys.path
        and ((Path(cwd) / f"{top}.py").is_file() or (Path(cwd) / top).is_dir())
    ):
        sys.path.append(cwd)  # last: never shadows an installed module
    return importlib.import_module(module_name)


def _attr(module, attr: str, where: str) -> Any:
    obj = module
    for part in attr.split("."):  # entry points allow `module:Class.attr`; so do we
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))]
            defined = [n for n in public if getattr(getattr(obj, n), "__module__", None) == module.__name__]
            raise UserError(
                f"{where} has no {attr!r}{_did_you_mean(part, public)}; "
                f"it defines: {', '.join(defined or public) or 'nothing callable'}"
            )
        obj = getattr(obj, part)
    return obj


def _did_you_mean(word: str, choices) -> str:
    return did_you_mean(word, choices, n=3)


def is_reward_model(name: str) -> bool:
    return name.startswith(MODEL_PREFIX) or (Path(name).is_dir() and (Path(name) / "config.json").is_file())


def find(name: str) -> RewardSpec:
    """Resolve a reward name (see the module docstring for the order)."""
    known = available()
    if name in known:
        return known[name]
    if is_reward_model(name):
        path = name.removeprefix(MODEL_PREFIX)
        if not path:
            raise UserError("model: needs a Hub id or a local directory, e.g. model:./my-reward-model")
        return RewardSpec(
            Path(path).name or path, "reward model", functools.partial(lambda p: p, path), None, path
        )
    if ":" in name:
        where, attr = name.rsplit(":", 1)
        if not where or not attr:
            raise UserError(f"reward {name!r}: write path/to/file.py:function or package.module:function")
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            ref = f"{path}:{attr}"
            return RewardSpec(attr, "file", functools.partial(_load_file_attr, str(path), attr), ref, ref)
        return RewardSpec(attr, "module", functools.partial(_load_module_attr, where, attr), name, name)
    raise UserError(f"unknown reward {name!r}{_did_you_mean(name, known)}{_hint(name)}")


def _hint(name: str) -> str:
    if name.endswith(".py") or "/" in name or os.sep in name:
        if Path(name).is_dir():
            return (
                f"; {name} is a directory without config.json: a reward model directory holds the model's "
                "config.json and weights"
            )
        return (
            f"; for a function in a file write {name if name.endswith('.py') else 'path/to/file.py'}:function"
        )
    searched = (
        f"; looked in the built-ins ({REWARDS_DIR}) and the installed plugins (entry-point group "
        f"{ENTRY_POINT_GROUP!r}); other names are path/to/file.py:function, package.module:function or "
        f"model:<Hub id or dir>. Available: {', '.join(sorted(available()))} (see `grpo-cli rewards ls`)"
    )
    return searched


# ---- binding a recipe entry ----


@dataclass
class BoundReward:
    """A recipe entry resolved and its arguments bound: ready to call, or a reward model path."""

    name: str  # the name metrics use: the entry's name for built-ins and plugins, the attribute otherwise
    entry: Any  # the RewardEntry
    spec: RewardSpec
    fn: Callable | None  # None for a reward model, until scoring.load_reward_models loads it
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
        return BoundReward(_registry_name_for(entry, spec), entry, spec, None, model_path=target)
    if not callable(target):
        raise UserError(
            f"{label} ({entry.name}): {target!r} is not callable; a reward is a function or a class"
        )
    factory = is_factory(target)
    _check_args(spec, entry.args, label, entry.name, constructor=inspect.isclass(target) or factory)
    try:
        if inspect.isclass(target) or factory:
            fn = target(**entry.args)
        else:
            fn = _bind_function(target, entry.args)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{label} ({entry.name}): args {entry.args} rejected: {describe(err)}") from err
    if not callable(fn):
        what = (
            f"calling it with its args returned {shorten(fn)}, not a reward"
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


def is_factory(target: Any) -> bool:
    """A reward factory: a function that takes none of the trainer's arguments (`completions`, `prompts`, ...) nor
    **kwargs, and returns a reward when called with the recipe entry's `args`, as TRL's
    `get_repetition_penalty_reward(ngram_size, max_penalty)` does."""
    if not (inspect.isfunction(target) or isinstance(target, functools.partial)):
        return False
    accepts = accepted_kwargs(target)
    # One that takes what the trainer passes (prompts, completion_ids, ...) is a reward missing `completions`.
    return accepts is not None and not accepts & TRAINER_KWARGS


def shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- optional dependencies a reward's module imports only when they are installed ----


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


def _check_builtin_args(fn: Callable, entry, label: str) -> None:
    """Built-ins check their arguments before scoring anything, so scoring nothing checks them now."""
    try:
        fn(prompts=[], completions=[], **{column: [] for column in required_columns(fn)})
    except Exception as err:
        raise UserError(f"{label} ({entry.name}): args {entry.args} rejected: {describe(err)}") from err


def _registry_name_for(entry, spec: RewardSpec) -> str:
    return entry.name if spec.origin == "built-in" or spec.origin.startswith("plugin") else spec.name


def _bind_function(fn: Callable, args: dict) -> Callable:
    if not args:
        return fn
    bound = functools.partial(fn, **args)
    functools.update_wrapper(bound, fn)
    return bound


def _check_args(spec: RewardSpec, args: dict, label: str, name: str, constructor: bool) -> None:
    """Every key of `args` is a parameter; for a class or a factory (`constructor`), every required one is set."""
    params = spec.parameters()
    init = spec.target.__init__ if inspect.isclass(spec.target) else spec.target
    accepts_any = constructor and any(p.kind == p.VAR_KEYWORD for p in _signature(init).parameters.values())
    described = ", ".join(n if p.default is p.empty else f"{n}={p.default!r}" for n, p in params.items())
    for key in args:
        if key not in params and not accepts_any:
            raise UserError(
                f"{label} ({name}): unknown argument {key!r}{_did_you_mean(key, params)}; "
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
        for name, p in _own_parameters(target.__init__).items():
            if name.endswith("_column") and isinstance(p.default, str):
                columns.append(p.default)
        call = target.__call__
    elif inspect.isfunction(target) or inspect.ismethod(target):
        call = target
    else:
        call = type(target).__call__
    for name, p in _own_parameters(call).items():
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
    params = _signature(call).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind != p.POSITIONAL_ONLY}


# ---- the set of rewards a recipe names ----


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
