"""Reading recipe files, before the schema: finding one (a path or a shipped name), YAML with its limits,
`extends:` parents merged, relative paths made absolute against the recipe's directory, KEY=VALUE overrides.

`load_data` does all of it and returns the merged mapping, which `recipe.parse_recipe` checks against the schema.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from grpo_cli._paths import RECIPES_DIR
from grpo_cli.errors import UserError, did_you_mean, shorten


def shipped_recipes() -> dict[str, Path]:
    """Shipped recipe names (file stems) -> paths."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def find_recipe(name_or_path: str) -> Path:
    if "\x00" in name_or_path:
        raise UserError(f"recipe name contains a NUL byte: {name_or_path!r}")
    try:
        Path(name_or_path).is_file()
    except OSError as err:  # a name too long for the file system (ENAMETOOLONG), and the like
        raise UserError(f"recipe {shorten(name_or_path, 60)}: {err.strerror or err}") from err
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    shipped = shipped_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if path.is_dir():
        raise UserError(f"{name_or_path} is a directory; give a recipe file or a shipped recipe name")
    nested = RECIPES_DIR / f"{name_or_path}.yaml"  # a pipeline's stage by name, e.g. pipeline/sft
    if "/" in name_or_path and ".." not in name_or_path and nested.is_file():
        return nested
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise UserError(f"recipe file not found: {name_or_path}")
    raise UserError(
        f"no recipe file or shipped recipe named {name_or_path!r}{did_you_mean(name_or_path, shipped)}; "
        f"shipped: {', '.join(shipped)} (see `grpo-cli recipes ls`)"
    )


# YAML 1.1 reads `1e-5` and `5e-1` (no dot, or no sign in the exponent) as strings; everyone means a number.
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
# Bounds no recipe comes near, so that a hostile or broken file is refused in milliseconds, not parsed for minutes.
MAX_DEPTH = 64  # deeper than any recipe needs; far below what recursion in the parser and pydantic survives
MAX_BYTES = 1 << 20  # the shipped recipes are under 3 KiB
MAX_VALUES = 100_000  # keys and values, counted as aliases (*name) expand them: a "billion laughs" stops here


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that reads `1e-5` as a float and refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the base class explains that one
                continue
            if first != line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (also on line {first}): give each key once",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        values, depth = _expanded_shape(node)
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; that is no recipe")
        if values > MAX_VALUES:
            raise _TooBig(
                f"holds {values if values < 10**12 else 'over 10**12'} values once its aliases (*name) are expanded; "
                f"a recipe has at most {MAX_VALUES:,}"
            )
        return self.construct_document(node)


_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class _TooBig(Exception):
    pass


def _expanded_shape(root) -> tuple[int, int]:
    """(values, depth) of a composed YAML document as construction would expand it: an alias counts its whole
    subtree again. Each node is measured once (aliases share nodes), so this is fast whatever the expansion."""
    memo: dict[int, tuple[int, int]] = {}
    # Post-order without recursion: a node is measured once all its children are.
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in memo:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            memo[id(node)] = (1, 1)
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in memo and child is not node)
            continue
        shapes = [memo.get(id(child), (1, 1)) for child in children]  # a node inside itself counts once
        memo[id(node)] = (
            1 + sum(values for values, _ in shapes),
            1 + max((depth for _, depth in shapes), default=0),
        )
    return memo[id(root)]


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """YAML text -> Python data, as recipes read it everywhere; errors are one line naming `source:line`."""
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{source}{where}: invalid YAML: {problem}") from err
    except RecursionError as err:
        raise UserError(f"{source}: nested too deeply to be a recipe") from err
    except _TooBig as err:
        raise UserError(f"{source}: {err}") from err
    except ValueError as err:  # e.g. an integer with thousands of digits
        raise UserError(f"{source}: invalid YAML: {err}") from err
    return data


def read_text(path: Path, what: str = "recipe") -> str:
    """A text file that must be UTF-8 (a BOM is allowed) and at most MAX_BYTES; a one-line error otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if len(raw) > MAX_BYTES:
        raise UserError(f"{path}: over {MAX_BYTES >> 20} MiB; a {what} is a few KiB of YAML, not a data file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); save the {what} as UTF-8"
        ) from err


def load_yaml(path: Path, what: str = "recipe") -> Any:
    """The one YAML loader for recipe files: UTF-8, duplicate keys refused, `1e-5` a float."""
    return parse_yaml(read_text(path, what), str(path))


def _read_recipe_file(path: Path) -> dict:
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values, not a {type(data).__name__}")
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`; mappings merge key by key, everything else (lists included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_with_parents(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise UserError(f"recipe extends itself in a loop: {chain}")
    data = _read_recipe_file(path)
    parent = data.pop("extends", None)
    absolutize_paths(data, path.parent)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent or "\x00" in parent or len(parent) > 4096:
        raise UserError(
            f"{path}: extends must be a recipe path or shipped recipe name, got {shorten(parent, 80)}"
        )
    parent_path = path.parent / parent
    if not _is_file(parent_path) and "/" not in parent and Path(parent).stem in shipped_recipes():
        parent_path = shipped_recipes()[Path(parent).stem]  # a shipped recipe by name
    if not _is_file(parent_path):
        raise UserError(
            f"{path}: extends {shorten(parent, 80)}, but {parent_path} does not exist (or is not a file)"
        )
    return deep_merge(_load_with_parents(parent_path.resolve(), (*seen, path)), data)


def resolve_path(value: Any, base: Path, always: bool = False) -> Any:
    """A relative path written in a recipe in `base` -> an absolute path; anything else as it is.

    A relative value is a path when `always`, when it starts with `.` or when it names something that exists
    next to the recipe; otherwise it stays as written (a Hub id such as `openai/gsm8k`, a split name `test`).
    """
    if not isinstance(value, str) or not value or "\x00" in value or value.startswith(("/", "~")):
        return value
    candidate = base / value
    try:
        if always or value.startswith(".") or candidate.exists():
            return str(candidate.resolve())
    except (OSError, ValueError):
        pass
    return value


def absolutize_paths(data: dict, base: Path) -> None:
    """Make every file path a recipe names absolute against the recipe's own directory `base`, in place.

    The path-valued fields: dataset.source, dataset.eval_split (when it names a file), model.name_or_path,
    distributed.config_file, reward names of the forms `file.py:attr`, `model:<dir>` and `<dir>`, and reward
    `args` whose names end in `_file` (in rewards and eval.rewards), and tool and environment names of the form
    `file.py:attr`. output_dir is not one: like `-o`, it is where the user runs the command.
    """
    from grpo_cli.data_formats import LOCAL_FORMATS

    sections = {name: data.get(name) for name in ("dataset", "model", "distributed")}
    for section, key in (
        ("dataset", "source"),
        ("dataset", "eval_split"),
        ("model", "name_or_path"),
        ("distributed", "config_file"),
    ):
        if isinstance(sections[section], dict) and key in sections[section]:
            value = sections[section][key]
            # A data file (by its suffix) and an accelerate config are paths even when missing: the error then
            # names the file next to the recipe, and a file of that name in the current directory is never used.
            always = key == "config_file" or (
                section == "dataset"
                and isinstance(value, str)
                and Path(value).suffix.lower() in LOCAL_FORMATS
            )
            sections[section][key] = resolve_path(value, base, always)
    evaluation = data.get("eval")
    entries = [*(data.get("rewards") if isinstance(data.get("rewards"), list) else [])]
    if isinstance(evaluation, dict) and isinstance(evaluation.get("rewards"), list):
        entries += evaluation["rewards"]
    entries += data.get("tools") if isinstance(data.get("tools"), list) else []
    environment = data.get("environment")
    if isinstance(environment, dict):
        entries += [environment] if "name" in environment else list(environment.values())
    for reward in entries:
        name = reward.get("name") if isinstance(reward, dict) else None
        if not isinstance(name, str) or "\x00" in name:
            continue
        args = reward.get("args")
        for key, value in args.items() if isinstance(args, dict) else ():
            if isinstance(key, str) and key.endswith(
                "_file"
            ):  # a reward's file argument (the judge's rubric_file)
                args[key] = resolve_path(value, base, always=True)
        if ".py:" in name:
            file, attr = name.rsplit(":", 1)
            if not Path(file).expanduser().is_absolute():
                reward["name"] = f"{(base / file).resolve()}:{attr}"
        elif name.startswith("model:"):
            reward["name"] = "model:" + resolve_path(name.removeprefix("model:"), base)
        elif _is_dir(base / name):
            reward["name"] = resolve_path(name, base)  # a reward model directory next to the recipe


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False for a name no file system can hold (too long, say): the schema then says what is wrong."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _is_file(path: Path) -> bool:
    """Path.is_file, False for a name no file system can hold."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


# ---- KEY=VALUE ----


def parse_value(raw: str) -> Any:
    """A command-line value as a recipe value: a YAML scalar or flow collection (`1e-5` a float, `[a, b]` a
    list, `null` None), else the text as it is. `KEY=VALUE` overrides and `rewards test --arg` read values so."""
    if raw == "":
        return None
    try:
        return parse_yaml(raw)
    except UserError:
        return raw


def parse_assignment(
    item: str, what: str = "override", example: str = "trainer.max_steps=20"
) -> tuple[str, Any]:
    """`dotted.key=value` -> (key, parsed value), or a one-line error naming `what`."""
    key, sep, raw = item.partition("=")
    if not sep or not key or "\x00" in key or any(not part for part in key.split(".")):
        raise UserError(f"bad {what} {item!r}: write KEY=VALUE with a dotted key, e.g. {example}")
    return key, parse_value(raw)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; each value is read by `parse_value` (`1e-5` is a float)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, value = parse_assignment(item)
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, list) and parts[depth + 1].isdigit():
                raise UserError(f"bad override {item!r}: list items cannot be set by index; edit the recipe")
            elif not isinstance(child, dict):
                raise UserError(f"bad override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_data(name_or_path: str | Path, overrides: list[str] | None = None) -> tuple[Path, dict]:
    """Find a recipe, read it with its `extends:` parents, apply the overrides: (its path, the merged mapping)."""
    path = find_recipe(str(name_or_path))
    data = _load_with_parents(path)
    return path, apply_overrides(data, overrides or [])
