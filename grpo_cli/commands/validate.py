from __future__ import annotations

import typer

from grpo_cli.commands._common import OVERRIDES, RECIPE


def validate(
    recipe: str = RECIPE,
    overrides: list[str] | None = OVERRIDES,
    num_processes: int | None = typer.Option(
        None,
        "--num-processes",
        min=1,
        help="Processes the run will use, for the batch rule (default: the recipe's distributed section).",
    ),
) -> None:
    """Check a recipe without loading a model: schema, trainer fields, rewards, dataset columns, batch shape.

    Reports every problem at once; exit code 0 when the recipe is good, 2 otherwise.
    """
    from grpo_cli import validation
    from grpo_cli.recipe import load_recipe

    loaded = load_recipe(recipe, overrides or [])
    if num_processes is not None:
        loaded.distributed.num_processes = num_processes
    validation.raise_if_problems(loaded, validation.check(loaded))
    typer.echo(f"{loaded.path.name}: ok ({loaded.algorithm}, {len(loaded.rewards)} rewards)")
