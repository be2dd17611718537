"""`grpo-cli validate`: every problem in a recipe, found without loading a model."""

from __future__ import annotations

from typing import Annotated

import typer

from grpo_cli.commands._common import Overrides, Recipe, counted


def validate(
    recipe: Recipe,
    overrides: Overrides = None,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes",
            metavar="N",
            min=1,
            help="Processes the run will use, for the batch rule (default: the recipe's distributed section).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a recipe without loading a model: schema, trainer fields, rewards, dataset columns, batch shape.

    Reports every problem at once; exit code 0 when the recipe is good, 2 otherwise.
    """
    from grpo_cli import pipeline, validation

    if pipeline.is_pipeline(recipe):
        stages = pipeline.validate(recipe, overrides or [])
        names = ", ".join(f"{path.name} ({loaded.algorithm})" for path, loaded in stages)
        typer.echo(f"{recipe}: ok (pipeline of {counted(len(stages), 'stage')}: {names})")
        return
    loaded = validation.validate(recipe, overrides or [], num_processes)
    for warning in validation.warnings_for(loaded):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{loaded.path.name}: ok ({loaded.algorithm}, {counted(len(loaded.rewards), 'reward')})")
