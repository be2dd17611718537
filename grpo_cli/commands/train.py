from __future__ import annotations

from pathlib import Path

import typer

from grpo_cli.commands._common import OVERRIDES, RECIPE, print_recipe


def train(
    recipe: str = RECIPE,
    overrides: list[str] | None = OVERRIDES,
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="Where to write the run (default: the recipe's output_dir)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a previous run in the output directory."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the output directory from its last checkpoint."
    ),
    num_processes: int | None = typer.Option(
        None,
        "--num-processes",
        min=1,
        help="Train with N processes through accelerate's launcher (default: the recipe's distributed.num_processes).",
    ),
) -> None:
    """Train a model with the recipe's algorithm (GRPO, PPO, SFT or reward modelling); write the run to its output directory."""
    import importlib
    import os
    import warnings

    from grpo_cli import distributed, models, validation
    from grpo_cli.recipe import load_recipe
    from grpo_cli.runs import check_resume_matches, last_checkpoint, prepare_output_dir

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # transformers 5 deprecation notices triggered inside TRL: nothing the user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from grpo_cli import pipeline

    # A file of stages: each trained as its own recipe, finished ones skipped.
    if pipeline.is_pipeline(recipe):
        from grpo_cli.errors import UserError

        if output_dir is not None or resume:
            raise UserError("a pipeline's stages write to their own output_dir, and resume by themselves")
        for stage in pipeline.train(recipe, overrides, overwrite=overwrite, num_processes=num_processes):
            took = "finished before, skipped" if stage.get("skipped") else f"{stage['wall_time_s']:.0f} s"
            typer.echo(f"{stage['stage']} -> {stage['output_dir']}: {took}")
        return
    loaded = load_recipe(recipe, overrides or [])
    if output_dir is not None:
        loaded.output_dir = str(output_dir)
    if num_processes is not None:
        loaded.distributed.num_processes = num_processes
    validation.raise_if_problems(loaded, validation.check(loaded))
    out = Path(loaded.output_dir)
    if resume:
        check_resume_matches(loaded, out)

    if not distributed.is_main_process():
        # The main process checked and prepared the output directory; the others only train.
        checkpoint = last_checkpoint(out) if resume else None
    else:
        checkpoint = prepare_output_dir(out, overwrite=overwrite, resume=resume)
        if distributed.wants_launcher(loaded.distributed) and not distributed.launched():
            # Start N copies of this same command under accelerate's launcher; they find WORLD_SIZE set.
            raise typer.Exit(distributed.relaunch(loaded.distributed))
        print_recipe(loaded)
        if checkpoint is not None:
            typer.echo(f"resuming from {checkpoint}", err=True)

    models.quiet_progress_bars()
    algorithm = importlib.import_module(f"grpo_cli.algorithms.{loaded.algorithm}")
    summary = algorithm.train(loaded, out, resume_from=checkpoint)
    if summary:
        from grpo_cli.model_card import write_run_card

        write_run_card(out)  # README.md, the model card: after summary.json, which it reads
        first, last = summary["first_reward"], summary["last_reward"]
        rewards = f", reward {first:.3f} -> {last:.3f}" if first is not None and last is not None else ""
        typer.echo(f"done: {summary['steps']} steps in {summary['wall_time_s']:.0f} s{rewards}; wrote {out}")
