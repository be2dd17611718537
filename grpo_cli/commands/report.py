"""`grpo-cli report`: plots and a markdown summary of one or more training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import LegacyOutput, counted, pick_output_dir, print_table


def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR",
            help="Run directories (the output_dir of a recipe), each holding a metrics.jsonl, or a pipeline "
            "file (or shipped pipeline name) for all of its stages' runs.",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Directory for report.md and the PNG plots. Default: RUN_DIR/report of the first run; for a "
            "pipeline, report-<pipeline name> beside its first stage's run (e.g. runs/report-pipeline).",
            show_default=False,
        ),
    ] = None,
    legacy_output: LegacyOutput = None,
) -> None:
    """Plot and summarise training runs: reward, each reward function, KL, loss, completion length, learning rate.

    Several runs are drawn in the same figures, so a GRPO and a PPO run of one task compare at a glance; runs
    of different kinds (RL, SFT, reward model) get a panel each, on their own scale. A learning rate that never
    changes is stated, not drawn. report.md shows each run's latest `grpo-cli eval` results (RUN_DIR/eval).
    A run still training can be reported on; it shows as in progress.

    Example: grpo-cli report runs/gsm8k-grpo runs/gsm8k-ppo -o reports/gsm8k
    """
    # Imported here so that `grpo-cli --help` does not load the plotting and table code.
    from rich.table import Table
    from rich.text import Text

    from grpo_cli import pipeline
    from grpo_cli.report import write_report

    # A pipeline (a file of stages, e.g. `pipeline`) stands for its stages' run directories, drawn together.
    pipelines = [arg for arg in run_dirs if not arg.is_dir() and pipeline.is_pipeline(str(arg))]
    run_dirs = [
        run
        for arg in run_dirs
        for run in (pipeline.run_dirs(str(arg), must_exist=True) if not arg.is_dir() else [arg])
    ]
    output_dir = pick_output_dir(output_dir, legacy_output)
    # A pipeline's report goes beside its runs, not into its first stage's run: `report quickstart` and
    # `report pipeline` share that stage.
    if output_dir is None and pipelines:
        output_dir = run_dirs[0].parent / f"report-{pipelines[0].stem}"
    written = write_report(run_dirs, output_dir)
    typer.echo(f"wrote {written.path} and {counted(len(written.plots), 'plot')} beside it")

    # One column per run: two or three runs compared side by side fit a terminal's width.
    table = Table()
    table.add_column("")
    for summary in written.summaries:
        table.add_column(Text(summary.label), justify="right")
    names = [name for name, _ in written.summaries[0].rows()]
    for i, name in enumerate(names):
        table.add_row(name, *(Text(summary.rows()[i][1]) for summary in written.summaries))
    print_table(table)
