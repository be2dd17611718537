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
    import importlib
    import os
    import warnings

    from grpo_cli import distributed, interrupts, models, validation
    from grpo_cli.errors import UserError
    from grpo_cli.phases import phase
    from grpo_cli.run_dir import (
        check_resume_matches,
        finished_steps,
        last_complete_checkpoint,
        prepare_output_dir,
        release_locks,
    )

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # transformers 5 deprecation notices triggered inside TRL: nothing the user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from grpo_cli import pipeline

    # A file of stages: each trained as its own recipe, finished ones skipped.
    if pipeline.is_pipeline(recipe):
        if output_dir is not None or resume:
            raise UserError("a pipeline's stages write to their own output_dir, and resume by themselves")
        for stage in pipeline.train(recipe, overrides, overwrite=overwrite, num_processes=num_processes):
            took = "finished before, skipped" if stage.get("skipped") else f"{stage['wall_time_s']:.0f} s"
            typer.echo(f"{stage['stage']} -> {stage['output_dir']}: {took}")
        return
    # The same checks and the same problem list as `validate`, before anything loads.
    loaded = validation.validate(recipe, overrides or [], num_processes)
    if output_dir is not None:
        loaded.output_dir = str(output_dir)
    out = Path(loaded.output_dir)
    if resume:
        check_resume_matches(loaded, out)

    interrupts.install()
    try:
        if not distributed.is_main_process():
            # The main process checked and prepared the output directory; the others only train.
            checkpoint = last_complete_checkpoint(out) if resume else None
        else:
            checkpoint = prepare_output_dir(out, overwrite=overwrite, resume=resume)
            if resume and _already_complete(loaded, out, finished_steps(out), checkpoint):
                return
            if resume and checkpoint is None:
                raise UserError(
                    f"--resume: {out} finished without saving a checkpoint (trainer.save_strategy), so it cannot "
                    "train further; start again with --overwrite"
                )
            with phase("importing TRL to check the trainer settings"):
                _check_trainer_config(loaded, out)  # TRL's own checks, in a second rather than after loading
            if distributed.wants_launcher(loaded.distributed) and not distributed.launched():
                # Start N copies of this same command under accelerate's launcher; they find WORLD_SIZE set.
                raise typer.Exit(distributed.relaunch(loaded.distributed))
            print_recipe(loaded)
            if checkpoint is not None:
                typer.echo(f"resuming from {checkpoint}", err=True)

        models.quiet_progress_bars()
        algorithm = importlib.import_module(f"grpo_cli.algorithms.{loaded.algorithm}")
        try:
            summary = algorithm.train(loaded, out, resume_from=checkpoint)
        except interrupts.Interrupted:
            raise
        except Exception as err:
            _raise_if_disk_full(err, out)
            raise
    except interrupts.Interrupted as stop:
        raise typer.Exit(_report_interruption(stop, out)) from None
    finally:
        interrupts.restore()
        release_locks()
    if summary:
        from grpo_cli.model_card import write_run_card

        write_run_card(out)  # README.md, the model card: after summary.json, which it reads
        first, last = summary["first_reward"], summary["last_reward"]
        rewards = f", reward {first:.3f} -> {last:.3f}" if first is not None and last is not None else ""
        typer.echo(f"done: {summary['steps']} steps in {summary['wall_time_s']:.0f} s{rewards}; wrote {out}")


def _already_complete(recipe, out: Path, done: int | None, checkpoint: Path | None) -> bool:
    """A finished run resumed with the same or a lower max_steps: nothing to train (a higher one continues).

    Finished: summary.json (written when training ends) says so, and no checkpoint of its last steps is missing.
    """
    from grpo_cli.run_dir import checkpoint_step

    if done is None or (checkpoint is not None and checkpoint_step(checkpoint) < done):
        return False
    target = recipe.trainer.get("max_steps")
    if isinstance(target, int) and target > done:
        return False
    typer.echo(
        f"{out} is complete: it trained {done} steps (trainer.max_steps={target if target is not None else 'unset'}); "
        "nothing to do. Raise trainer.max_steps to train further."
    )
    return True


def _check_trainer_config(recipe, out: Path) -> None:
    """Build the TRL config once before any model loads, so that a setting TRL rejects fails at once."""
    if recipe.algorithm == "grpo":
        from grpo_cli.algorithms import grpo

        grpo.config(recipe, out, [entry.weight for entry in recipe.rewards])
    elif recipe.algorithm == "ppo":
        from grpo_cli.algorithms import ppo

        ppo.config(recipe, out, train_size=0)
    else:
        import importlib

        importlib.import_module(f"grpo_cli.algorithms.{recipe.algorithm}").config(recipe, out)


def _report_interruption(stop, out: Path) -> int:
    """One line: where the run stopped and how to continue it; the exit code (130 SIGINT, 143 SIGTERM)."""
    import os
    import signal

    from grpo_cli import distributed, interrupts

    name = signal.Signals(stop.signum).name
    if distributed.is_main_process():
        if stop.step is None:
            typer.echo(f"{name}: stopped before training began; nothing was trained", err=True)
        else:
            typer.echo(
                f"{name}: stopped at step {stop.step}, saved in {stop.checkpoint}; continue with: "
                f"{interrupts.resume_command(out)}",
                err=True,
            )
    # Under `grpo-cli train --num-processes N`, the grpo-cli process above reports the exit code.
    return 0 if os.environ.get(interrupts.FORWARDED_ENV) else stop.exit_code


def _raise_if_disk_full(err: BaseException, out: Path) -> None:
    """A full disk, wherever it struck (safetensors, torch.save, a JSON file): one line and exit 2."""
    import errno
    import shutil

    from grpo_cli.errors import UserError, describe
    from grpo_cli.run_dir import STAGING, last_complete_checkpoint

    chain, seen = [], err
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    no_space = [e for e in chain if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)]
    staging = out / STAGING
    partial = sorted(p.name for p in staging.glob("checkpoint-*")) if staging.is_dir() else []
    shutil.rmtree(staging, ignore_errors=True)  # a partial checkpoint: space back, and never mistaken for one
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return
    if not no_space and free >= 1 << 20:
        return
    what = next((e.filename for e in no_space if getattr(e, "filename", None)), None)
    what = what or (partial[-1] if partial else f"the run's files ({describe(err)})")
    checkpoint = last_complete_checkpoint(out)
    advice = (
        f"{checkpoint.name} is complete: free some space, then continue with --resume"
        if checkpoint is not None
        else "no checkpoint was complete yet: free some space, then start again with --overwrite"
    )
    raise UserError(
        f"the disk is full: could not write {what} in {out} ({_size(free)} free); {advice}"
    ) from err


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
