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
    """Copy a shipped recipe to edit it; relative paths in it (a pipeline's stages too) are made absolute so the
    copy runs anywhere."""
    import yaml

    from grpo_cli.pipeline import stage_paths
    from grpo_cli.recipe_files import absolutize_paths, find_recipe, parse_yaml, read_text
    from grpo_cli.run_files import atomic_write

    source = find_recipe(name)
    into = Path(dest)
    target = into / source.name if dest.endswith(("/", os.sep)) or into.is_dir() else into
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to replace it")
    text = read_text(source)
    data = parse_yaml(text, str(source)) or {}
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: a recipe must be a mapping of keys to values, not a {type(data).__name__}"
        )
    before = yaml.safe_dump(data)
    absolutize_paths(data, source.parent)
    if "stages" in data:  # a pipeline file: its stage recipes, found as `train` finds them
        data["stages"] = [str(stage) for stage in stage_paths(source)]
    if yaml.safe_dump(data) != before:  # keep the comments when nothing needed rewriting
        header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
        text = header + yaml.safe_dump(data, sort_keys=False)
    atomic_write(target, text)
    typer.echo(f"wrote {target}")
