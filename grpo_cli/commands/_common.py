"""Argument and option declarations shared by several subcommands, and the resolved-recipe printout."""

from __future__ import annotations

import typer

RECIPE = typer.Argument(
    ..., help="A recipe file, or the name of a shipped recipe (see `grpo-cli recipes ls`)."
)
OVERRIDES = typer.Argument(
    None,
    help="KEY=VALUE overrides of recipe fields by dotted path, e.g. trainer.max_steps=20 lora.r=8.",
    show_default=False,
)


def print_recipe(recipe) -> None:
    from rich.console import Console
    from rich.syntax import Syntax

    Console(stderr=True).print(
        Syntax(recipe.to_yaml(), "yaml", theme="ansi_dark", background_color="default")
    )
