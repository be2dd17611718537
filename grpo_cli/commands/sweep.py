"""`grpo-cli sweep`: a recipe over a grid of overrides, through `workflows.sweep`; prints the ranked table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import Recipe, print_table


def sweep(
    recipe: Recipe,
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=V1,V2",
            help="A recipe field by dotted path and the values to try, comma-separated; several give their "
            "grid. KEY=V (one value) applies to every run.",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="The sweep directory: one run directory per point of the grid, and report/ (default: "
            "runs/sweep-<recipe>).",
            show_default=False,
        ),
    ] = None,
    parallel: Annotated[
        int,
        typer.Option(
            "--parallel",
            min=1,
            metavar="N",
            help="Train N runs at once (their output in DIR/logs/). Default 1: on a small machine runs at once "
            "slow each other.",
        ),
    ] = 1,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes", min=1, metavar="N", help="Processes per run, as for train.", show_default=False
        ),
    ] = None,
) -> None:
    """Train a recipe over a grid of values (e.g. learning rates), rank the runs, and report them together.

    Every run is validated before any trains. Run the same command again to continue: finished runs are
    skipped, interrupted ones resumed. The runs are ranked by their last held-out evaluation during training
    (eval.every), else by their final training reward.

    Example: grpo-cli sweep addition trainer.learning_rate=1e-3,3e-3,1e-2
    """
    from rich.table import Table

    from grpo_cli.errors import Stop
    from grpo_cli.workflows.sweep import REPORT, default_directory, ranked
    from grpo_cli.workflows.sweep import sweep as run_sweep

    directory = output_dir or default_directory(recipe)
    runs = run_sweep(recipe, assignments, directory=directory, parallel=parallel, num_processes=num_processes)
    table = Table()
    for column in ("rank", "run", "ranked by", "value", "status"):
        table.add_column(column, justify="right" if column in ("rank", "value") else "left")
    for rank, run in enumerate(ranked(runs), 1):
        name, value = run.metric or ("-", None)
        table.add_row(str(rank), run.name, name, "-" if value is None else f"{value:.4f}", run.status)
    print_table(table)
    if (directory / REPORT).is_dir():
        typer.echo(f"report: {directory / REPORT / 'report.md'}")
    failed = [run.name for run in runs if run.exit_code not in (0, None)]
    if failed:
        typer.echo(
            f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)} (see their output above)",
            err=True,
        )
        raise Stop(1)
