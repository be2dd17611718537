"""Importing a user's plugin code: a `path/to/file.py:attr` or `package.module:attr`, with errors at their line.

Plugin files are imported as submodules of an otherwise empty package per plugin kind
(`grpo_cli_user_rewards`, ...), so that what they define pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpo_cli.errors import UserError, describe, did_you_mean


def file_package(kind: str) -> str:
    """The package a kind's plugin files are imported under."""
    return f"grpo_cli_user_{kind}s"


def import_failure(what: str, err: BaseException, files: tuple[Callable[[str], bool], Path | None]) -> str:
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


def module_files(module_name: str) -> tuple[Callable[[str], bool], Path | None]:
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


class _ExitAtImport(BaseException):
    """`os._exit(code)` called by a user's module while it was imported (see `_import_guard`)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


IMPORT_TIMEOUT_S = 60  # a plugin's module runs once, to define things: a minute is a hang, not a slow import


@contextlib.contextmanager
def _import_guard(what: str):
    """Run a user's module (its import) so that `sys.exit()` or `os._exit()` in it, or a loop that never ends, is
    a one-line error naming it rather than a silent exit or a hang. `os._exit` is replaced for the import's length
    (it would end the process at once, no handler running: validate exited 0 with no output); what reaches the
    C library directly (a signal to itself, a crash) still ends the process. The time limit needs SIGALRM and
    the main thread; elsewhere the import runs unguarded for time."""
    timed = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    real_exit = os._exit

    def exit_at_import(code):
        raise _ExitAtImport(code)

    os._exit = exit_at_import
    if timed:

        def ran_over(_signum, _frame):
            raise UserError(
                f"{what} was still running its import after {IMPORT_TIMEOUT_S} s; does it loop, or "
                "wait for something at import time? Define rewards there; do the work when called"
            )

        previous = signal.signal(signal.SIGALRM, ran_over)
        left = signal.setitimer(signal.ITIMER_REAL, IMPORT_TIMEOUT_S)[
            0
        ]  # an outer timer, if any, is put back
    try:
        yield
    except SystemExit as err:
        raise UserError(
            f"{what} called sys.exit({err.code!r}) while being imported; a plugin file must only define things"
        ) from None
    except _ExitAtImport as err:
        raise UserError(
            f"{what} called os._exit({err.code!r}) while being imported; a plugin file must only define things"
        ) from None
    finally:
        os._exit = real_exit
        if timed:
            signal.setitimer(signal.ITIMER_REAL, left)
            signal.signal(signal.SIGALRM, previous)


def _file_module_name(path: Path, package: str) -> str:
    # Stable across processes (unlike hash()), distinct for two files with the same name.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"{package}.{stem}_{digest}"


def load_file_attr(kind: str, file: str, attr: str) -> Any:
    """`attr` of the Python file `file`, imported once per process under the kind's package."""
    path = Path(file).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    package_name = file_package(kind)
    if package_name not in sys.modules:
        package = types.ModuleType(
            package_name, f"{kind.capitalize()} plugin files, imported by grpo_cli.user_code."
        )
        package.__path__ = []
        sys.modules[package_name] = package
    module_name = _file_module_name(path, package_name)
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before running it, as import does: dataclasses and pickle need it
        try:
            with _import_guard(f"{kind} file {path}"):
                spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            if isinstance(err, UserError):
                raise
            raise UserError(
                import_failure(f"{kind} file", err, ((lambda f: Path(f).resolve() == path), path))
            ) from err
    return _attr(sys.modules[module_name], attr, str(path))


def load_module_attr(kind: str, module_name: str, attr: str) -> Any:
    """`attr` of an importable module (the current directory is tried last, as `python -m` would)."""
    try:
        with _import_guard(f"{kind} module {module_name!r}"):
            module = _import_module(module_name)
    except UserError:
        raise
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise UserError(
                f"{kind} module {module_name!r} not found: no module named {err.name!r} is installed or on "
                f"sys.path, nor in the current directory ({Path.cwd()}); for a file, write path/to/file.py:{attr}"
            ) from err
        raise UserError(
            import_failure(f"{kind} module {module_name!r}", err, module_files(module_name))
        ) from err
    except Exception as err:
        raise UserError(
            import_failure(f"{kind} module {module_name!r}", err, module_files(module_name))
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
                f"{where} has no {attr!r}{did_you_mean(part, public, n=3)}; "
                f"it defines: {', '.join(defined or public) or 'nothing callable'}"
            )
        obj = getattr(obj, part)
    return obj
