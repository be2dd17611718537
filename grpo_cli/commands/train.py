"""`grpo-cli train`: one recipe, or every stage of a pipeline file, through `workflows.train`; prints what ended."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import Overrides, Recipe, print_recipe


def train(
    recipe: Recipe,
    overrides: Overrides = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Where to write the run (default: the recipe's output_dir).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the previous run in the output directory (its own files only; yours are kept).",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in the output directory from its last checkpoint."),
    ] = False,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes",
            min=1,
            metavar="N",
            help="Train with N processes through accelerate's launcher (default: the recipe's "
            "distributed.num_processes).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a model with the recipe's algorithm (GRPO, PPO, SFT or reward modelling); write the run to its output directory."""
    from grpo_cli import pipeline
    from grpo_cli.errors import UserError
    from grpo_cli.workflows.train import train_recipe

    # A file of stages: each trained as its own recipe, finished ones skipped.
    if pipeline.is_pipeline(recipe):
        if output_dir is not None or resume:
            raise UserError("a pipeline's stages write to their own output_dir, and resume by themselves")
        stages = []
        trained_stages = pipeline.train(
            recipe, overrides, overwrite=overwrite, num_processes=num_processes, show_recipe=print_recipe
        )
        for stage in trained_stages:
            if "trained" in stage:
                _say_done(stage["trained"])
            stages.append(stage)
        for stage in stages:
            took = "finished before, skipped" if stage.get("skipped") else f"{stage['wall_time_s']:.0f} s"
            typer.echo(f"{stage['stage']} -> {stage['output_dir']}: {took}")
        return
    _say_done(
        train_recipe(
            recipe,
            overrides,
            output_dir=output_dir,
            overwrite=overwrite,
            resume=resume,
            num_processes=num_processes,
            show_recipe=print_recipe,
        )
    )


def _say_done(trained) -> None:
    """What a trained recipe ends with on stdout: its steps, time and reward, or why nothing was trained."""
    if trained.note:
        typer.echo(trained.note)
    summary = trained.summary
    if summary:
        steps = summary["steps"]
        typer.echo(
            f"done: {steps} step{'' if steps == 1 else 's'} in {summary['wall_time_s']:.0f} s"
            f"{_reward_change(summary)}{_reward_errors(summary)}; wrote {trained.output_dir}"
        )


def _reward_change(summary: dict) -> str:
    """ ", reward A -> B (...)": summary.json's means over its first and last few steps (single steps are noisy)."""
    first, last, window = (
        summary.get(k) for k in ("first_mean_reward", "last_mean_reward", "mean_reward_window")
    )
    if first is None or last is None or not window:
        return ""
    over = "the first and last step" if window == 1 else f"means of the first and last {window} steps"
    return f", reward {first:.3f} -> {last:.3f} ({over})"


def _reward_errors(summary: dict) -> str:
    """ "; reward 'x' failed on E of N completions (P%)" for each reward whose `on_error` policy replaced scores."""
    failed = [
        f"; reward {name!r} failed on {t['errors']} of {t['completions']} completions "
        f"({t['errors'] / t['completions']:.0%})"
        for name, t in (summary.get("reward_errors") or {}).items()
        if t.get("errors") and t.get("completions")
    ]
    return "".join(failed)
