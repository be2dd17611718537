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


def pick_output_dir(given: Path | None, legacy: Path | None) -> Path | None:
    """--output-dir, or --output (its old name) with a note saying so; both at once is an error."""
    if legacy is None:
        return given
    if given is not None:
        from grpo_cli.errors import UserError

        raise UserError("--output is the old name of --output-dir: give --output-dir alone")
    typer.echo("note: --output is now --output-dir (-o); the old name goes in the next release", err=True)
    return legacy


# The trainer fields that decide what an algorithm computes: print_recipe names TRL's defaults for those the recipe
# leaves unset, since the recipe as written does not show them.
DECIDING_FIELDS = {
    "grpo": ("loss_type", "beta", "scale_rewards"),
    "ppo": ("kl_coef", "cliprange", "vf_coef"),
}


def print_recipe(recipe) -> None:
    """The resolved recipe on stderr, then a line with TRL's defaults for the DECIDING_FIELDS it leaves unset."""
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
    """ "TRL defaults in effect (...): trainer.loss_type: dapo, ...", for the deciding fields that `recipe.trainer`
    does not set; None when it sets them all (or its algorithm has none listed)."""
    from grpo_cli import trainer_fields

    fields = trainer_fields.fields(recipe.algorithm)
    unset = [name for name in DECIDING_FIELDS.get(recipe.algorithm, ()) if name not in recipe.trainer]
    if not unset:
        return None
    shown = ", ".join(f"trainer.{name}: {fields[name].default}" for name in unset)
    return f"TRL defaults in effect (the recipe does not set them): {shown}"
