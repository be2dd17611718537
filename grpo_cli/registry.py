"""The plugin registry: every name a user can type for one kind of plugin (rewards; tools and environments next)
resolves through one `Registry`, and only there.

A name resolves, in this order, as:
  1. a built-in (the kind's own folder; `grpo-cli rewards ls` lists the rewards),
  2. an installed plugin, registered by another distribution in the kind's entry-point group
     (`grpo_cli.rewards`, `grpo_cli.tools`, `grpo_cli.environments`),
  3. `path/to/file.py:attr` (relative to the recipe),
  4. `package.module:attr` (importable; the current directory is tried last, as `python -m` would).
A kind may resolve more names before the last two (rewards: `model:<Hub id or dir>`, see `reward_binding`).

Entry points are read once per group and kept until sys.path changes (`clear_caches` forgets them), so a lookup,
or a reward unpickled in a worker, does not scan every installed distribution again; a built-in's name is
resolved without reading them at all (a built-in wins over a plugin of the same name either way).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli import user_code
from grpo_cli.errors import UserError, did_you_mean
from grpo_cli.signatures import own_parameters

LISTED = 20  # names an "Available:" list shows before it says how many there are


@dataclass
class PluginSpec:
    """A plugin the registry can resolve, before its arguments are bound."""

    name: str
    origin: (
        str  # "built-in", "plugin (dist version)", "file", "module", or a kind's own (e.g. "reward model")
    )
    load: Callable[[], Any] = field(repr=False)
    ref: str | None = None  # a name that resolves to this plugin again, from any directory
    source: str = ""  # where it is defined: "module:attr" or "path.py:attr"
    dist: str = ""  # for a plugin: the distribution that registers it, "name version"
    reserved: frozenset[str] = (
        frozenset()
    )  # parameters the caller fills in (a reward's prompts, completions, ...)

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
        target = self.target.__init__ if inspect.isclass(self.target) else self.target
        return own_parameters(target, self.reserved)


def capped(names) -> str:
    """Names sorted and joined, the first LISTED of them and the count when there are more."""
    names = sorted(names)
    shown = ", ".join(names[:LISTED])
    return shown if len(names) <= LISTED else f"{shown}, ... ({len(names)} total)"


_entry_points: dict[
    str, tuple[tuple[str, ...], list]
] = {}  # group -> (sys.path it was read with, entry points)


def entry_points(group: str) -> list:
    """The entry points of `group`, read once per sys.path (a distribution added to it is seen, as imports see it)."""
    import importlib.metadata  # here: a recipe naming only built-ins never needs it (a twentieth of a second)

    path = tuple(sys.path)
    cached = _entry_points.get(group)
    if cached is None or cached[0] != path:
        cached = (path, list(importlib.metadata.entry_points(group=group)))
        _entry_points[group] = cached
    return cached[1]


def clear_caches() -> None:
    """Forget the entry points read so far (tests that change what is installed call this)."""
    _entry_points.clear()


class Registry:
    """The names of one kind of plugin: built-ins, installed plugins, files and modules."""

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Callable[[], dict[str, PluginSpec]],
        builtin_place: str,
        other_names: str,
        listing: str,
        reserved: frozenset[str] = frozenset(),
    ):
        self.kind = kind  # "reward": how errors name one
        self.group = group  # the entry-point group other distributions register in
        self._builtins = functools.cache(builtins)
        self.builtin_place = builtin_place  # where the built-ins are, for errors
        self.other_names = other_names  # the forms a name can take besides these, for errors
        self.listing = listing  # the command that lists them
        self.reserved = reserved

    def builtins(self) -> dict[str, PluginSpec]:
        return self._builtins()

    def installed(self) -> dict[str, PluginSpec]:
        """Plugins other distributions register in the entry-point group."""
        specs = {}
        for ep in entry_points(self.group):
            if ep.name in specs:
                continue  # the first on sys.path wins, as for imports
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            load = functools.partial(self._load_entry_point, ep)
            specs[ep.name] = PluginSpec(
                ep.name, f"plugin ({dist})", load, ep.name, ep.value, dist, self.reserved
            )
        return specs

    def available(self) -> dict[str, PluginSpec]:
        """Every plugin that can be named without a path: built-ins, then installed plugins."""
        return {**self.installed(), **self.builtins()}

    def find(self, name: str, path_hint: Callable[[str], str | None] | None = None) -> PluginSpec:
        """Resolve a name (see the module docstring for the order); `path_hint` may explain a path-like name."""
        builtins = self.builtins()
        if name in builtins:
            return builtins[name]
        installed = self.installed()
        if name in installed:
            return installed[name]
        if ":" in name:
            where, attr = name.rsplit(":", 1)
            if not where or not attr:
                raise UserError(
                    f"{self.kind} {name!r}: write path/to/file.py:function or package.module:function"
                )
            if where.endswith(".py"):
                path = Path(where).expanduser().resolve()
                ref = f"{path}:{attr}"
                load = functools.partial(user_code.load_file_attr, self.kind, str(path), attr)
                return PluginSpec(attr, "file", load, ref, ref, reserved=self.reserved)
            load = functools.partial(user_code.load_module_attr, self.kind, where, attr)
            return PluginSpec(attr, "module", load, name, name, reserved=self.reserved)
        hint = self._hint(name, path_hint)
        raise UserError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.available(), n=3)}{hint}")

    def _hint(self, name: str, path_hint: Callable[[str], str | None] | None) -> str:
        if name.endswith(".py") or "/" in name or os.sep in name:
            special = path_hint(name) if path_hint else None
            if special:
                return special
            file = name if name.endswith(".py") else "path/to/file.py"
            return f"; for a function in a file write {file}:function"
        return (
            f"; looked in the built-ins ({self.builtin_place}) and the installed plugins (entry-point group "
            f"{self.group!r}); other names are {self.other_names}. "
            f"Available: {capped(self.available())} (see `{self.listing}`)"
        )

    def _load_entry_point(self, ep):
        module_name = ep.value.split(":")[0].strip()
        try:
            return ep.load()
        except Exception as err:
            dist = f"{ep.dist.name}, " if ep.dist else ""
            what = f"{self.kind} plugin {ep.name!r} ({dist}{ep.value})"
            files = user_code.module_files(module_name)
            raise UserError(user_code.import_failure(what, err, files)) from err
