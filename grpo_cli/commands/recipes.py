"""`grpo-cli recipes ls | show RECIPE | cp NAME DEST`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.errors import UserError

# A full stop ending a sentence: at the end of the text, or before the capital that starts the next one (so
# `e.g. this` and `~2.5 min` do not end one).
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`]|\s*$)")


def _description(path: Path) -> str:
    """A recipe's description: the first sentence of its leading comment (after the line naming the command that
    runs it), whole over however many lines it spans. A first line that ends a sentence is kept whole."""
    from grpo_cli.recipe_files import read_text

    lines: list[str] = []
    for line in read_text(path).splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if not lines and (not text or text.startswith("grpo-cli ") or text.lower().startswith("run:")):
            continue
        if not text:  # the paragraph ends before a sentence did
            break
        if not lines and text[-1] in ".!?":
            return text
        lines.append(text)
        end = _SENTENCE_END.search(text)
        if end:
            joined = " ".join(lines)
            return joined[: len(joined) - len(text) + end.end()]
    return " ".join(lines)


def ls() -> None:
    """List the shipped recipes."""
    from rich.table import Table

    from grpo_cli.commands._common import print_table
    from grpo_cli.recipe_files import load_yaml, shipped_recipes

    table = Table("name", "algorithm", "description", box=None)
    for name, path in shipped_recipes().items():
        data = load_yaml(path)
        algorithm = data.get("algorithm", "grpo") if isinstance(data, dict) else "?"
        if isinstance(data, dict) and "stages" in data:
            algorithm = "pipeline"
        table.add_row(name, algorithm, _description(path))
    print_table(table)


def show(
    name: Annotated[
        str,
        typer.Argument(metavar="RECIPE", help="A shipped recipe name or a recipe file.", show_default=False),
    ],
) -> None:
    """Print a recipe's YAML as written."""
    from grpo_cli.recipe_files import find_recipe, read_text

    typer.echo(read_text(find_recipe(name)), nl=False)


def cp(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A shipped recipe name.", show_default=False)],
    # Text, not a Path: Path("newdir/") drops the slash that says "a directory".
    dest: Annotated[
        str,
        typer.Argument(
            metavar="DEST",
            help="Where to write the copy: a file, or a directory (an existing one, or a new one when DEST "
            "ends with /).",
            show_default=False,
        ),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace the copy if it exists.")] = False,
) -> None:
    """Copy a shipped recipe to edit it. A pipeline's stage files are copied too, beside it at the same relative
    paths, so the copy is whole and its stages can be edited; other relative paths in it (data files, a parent it
    extends) are made absolute so the copy runs anywhere."""
    from grpo_cli.pipeline import KEY, stage_paths
    from grpo_cli.recipe_files import find_recipe
    from grpo_cli.run_files import atomic_write

    source = find_recipe(name)
    into = Path(dest)
    target = into / source.name if dest.endswith(("/", os.sep)) or into.is_dir() else into
    text, data = _copied(source)
    files = {target: text}
    if KEY in data:  # a pipeline file: its stages beside the copy, as `train` finds them
        stages = []
        for written, stage in zip(data[KEY], stage_paths(source), strict=True):
            inside = not Path(written).is_absolute() and ".." not in Path(written).parts
            relative = written if inside and (source.parent / written).is_file() else stage.name
            copy = target.parent / relative
            if copy in files:
                raise UserError(f"{source}: two stages would be copied to {copy}; copy them one by one")
            files[copy] = _copied(stage)[0]
            stages.append(relative)
        if stages != data[KEY]:
            data[KEY] = stages
            files[target] = _with_header(text, data)
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        one = len(existing) == 1
        raise UserError(
            f"{', '.join(existing)} exist{'s' if one else ''}; pass --force to replace {'it' if one else 'them'}"
        )
    for path, content in files.items():
        atomic_write(path, content)
    typer.echo(f"wrote {target}" + (f" and its {len(files) - 1} stages" if len(files) > 1 else ""))


def _copied(source: Path) -> tuple[str, dict]:
    """A recipe file's text for a copy elsewhere (its relative data paths and `extends:` made absolute; the text
    as written, comments and all, when nothing needed that) and its mapping as written."""
    import copy

    from grpo_cli.recipe_files import absolutize_paths, parse_yaml, read_text, shipped_recipes

    text = read_text(source)
    data = parse_yaml(text, str(source)) or {}
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: a recipe must be a mapping of keys to values, not a {type(data).__name__}"
        )
    written = copy.deepcopy(data)
    absolutize_paths(data, source.parent)
    parent = data.get("extends")
    if isinstance(parent, str) and not ("/" not in parent and Path(parent).stem in shipped_recipes()):
        data["extends"] = str((source.parent / parent).resolve())  # a shipped name resolves anywhere
    if data != written:
        text = _with_header(text, data)
    return text, written


def _with_header(text: str, data: dict) -> str:
    """`data` as YAML under the leading comment lines of `text`."""
    import yaml

    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return header + yaml.safe_dump(data, sort_keys=False)
