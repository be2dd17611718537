"""Argument and option declarations shared by several subcommands, and the resolved-recipe printout.

Commands declare parameters the `Annotated` way: `recipe: Recipe`, `overrides: Overrides = None`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_RECIPE_HELP = "A recipe file, or the name of a shipped recipe (see `grpo-cli recipes ls`)."
_OVERRIDES_HELP = "Overrides of recipe fields by dotted path, e.g. trainer.max_steps=20 lora.r=8."

Recipe = Annotated[str, typer.Argument(metavar="RECIPE", help=_RECIPE_HELP, show_default=False)]
Overrides = Annotated[
    list[str] | None,
    # Usage reads `[KEY=VALUE]...`: Typer adds the brackets and dots of an optional, repeatable argument.
    typer.Argument(metavar="KEY=VALUE", help=_OVERRIDES_HELP, show_default=False),
]
# `--output`, the old name of eval's and report's `--output-dir`: accepted, not shown, for one release.
LegacyOutput = Annotated[
    Path | None,
    typer.Option("--output", hidden=True, help="Old name of --output-dir.", show_default=False),
]


def counted(count: int, noun: str) -> str:
    """`1 reward`, `2 rewards`: a count with its noun (a regular plural)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def pick_output_dir(given: Path | None, legacy: Path | None) -> Path | None:
    """--output-dir, or --output (its old name) with a note saying so; both at once is an error."""
    if legacy is None:
        return given
    if given is not None:
        from grpo_cli.errors import UserError

        raise UserError("--output is the old name of --output-dir: give --output-dir alone")
    typer.echo("note: --output is now --output-dir (-o); the old name goes in the next release", err=True)
    return legacy


# Piped or redirected, a table is as wide as its rows: a reader of `| cat`, `| grep` or a log file wants one line
# per row, and Rich's default for a non-terminal, 80 columns, wrapped them.
_PIPED_WIDTH = 10_000


def stdout_console():
    """A Rich console for stdout: a terminal's own width; piped or redirected, as wide as the rows printed
    (unless COLUMNS says otherwise). Every command printing a table to stdout takes its console from here."""
    import os

    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH
    return console


def print_table(table) -> None:
    """Print a Rich table (or any renderable) to stdout: on a terminal as Rich draws it; piped or redirected, one
    line per row and no trailing padding, so `| cat`, `| grep` and log files read cleanly."""
    console = stdout_console()
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    typer.echo("".join(line.rstrip() + "\n" for line in captured.get().splitlines()), nl=False)


def print_recipe(recipe) -> None:
    """The resolved recipe on stderr, then a line with TRL's defaults for the fields that decide what the algorithm
    computes (the table's `deciding_fields`) when the recipe leaves them unset: the recipe as written hides them."""
    from rich.console import Console
    from rich.syntax import Syntax

    from grpo_cli.output import say

    Console(stderr=True).print(
        Syntax(recipe.to_yaml(), "yaml", theme="ansi_dark", background_color="default")
    )
    defaults = trl_defaults(recipe)
    if defaults:
        say(defaults)  # whole, not cut at the console's width as the recipe's lines are


def trl_defaults(recipe) -> str | None:
    """`TRL defaults in effect (...): trainer.loss_type: dapo, ...`, for the deciding fields that `recipe.trainer`
    does not set; None when it sets them all (or its algorithm has none listed)."""
    from grpo_cli import trainer_fields
    from grpo_cli.algorithms.table import ALGORITHMS

    fields = trainer_fields.fields(recipe.algorithm)
    deciding = ALGORITHMS[recipe.algorithm].deciding_fields
    unset = [name for name in deciding if name not in recipe.trainer]
    if not unset:
        return None
    shown = ", ".join(f"trainer.{name}: {fields[name].default}" for name in unset)
    return f"TRL defaults in effect (the recipe does not set them): {shown}"
