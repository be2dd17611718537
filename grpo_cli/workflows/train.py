"""Train one recipe: validate it, prepare (or resume) its run directory, train with its algorithm, write the card.

`grpo-cli train RECIPE` and every stage of a pipeline come here. What goes to stderr goes through `output`; the
result comes back as a `Trained`; a run stopped by a signal, or handed to accelerate's launcher, ends the command
with `errors.Stop` and its exit code.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

from grpo_cli import distributed, interrupts, models, reward_workers, validation
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.errors import Stop, UserError, describe
from grpo_cli.output import phase, say
from grpo_cli.run_dir import (
    STAGING,
    check_resume_matches,
    checkpoint_step,
    checkpoints,
    discard_unstarted_run,
    finished_steps,
    last_complete_checkpoint,
    no_usable_checkpoint,
    prepare_output_dir,
    release_locks,
    usable_checkpoint,
)


@dataclass
class Trained:
    """What `train_recipe` did: the run directory, and its summary.json (None when there was nothing to train, and
    on processes other than the main one)."""

    output_dir: Path
    summary: dict | None
    note: str | None = None  # why nothing was trained (a finished run resumed), for the command to print


def train_recipe(
    recipe: str,
    overrides: list[str] | None = None,
    *,
    output_dir: Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    num_processes: int | None = None,
    in_pipeline: bool = False,
    show_recipe=None,
) -> Trained:
    """Train the recipe (a file or a shipped name) into its output directory, or `output_dir`.

    `show_recipe(recipe)` prints the resolved recipe once it is checked (the command's presentation);
    `in_pipeline`: an interrupted run is continued by running its pipeline again, not by `--resume`.
    """
    distributed.guard_worker()  # a launched process dies with the process that holds the run lock
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # transformers 5 deprecation notices triggered inside TRL: nothing the user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    interrupts.install()
    out: Path | None = None
    try:
        # The same checks and the same problem list as `validate`, before anything loads.
        loaded = validation.validate(recipe, overrides or [], num_processes)
        if output_dir is not None:
            loaded.output_dir = str(output_dir)
        out = Path(loaded.output_dir)
        done = _prepare(loaded, out, overwrite=overwrite, resume=resume, show_recipe=show_recipe)
        if isinstance(done, Trained):
            return done
        models.quiet_progress_bars()
        try:
            summary = ALGORITHMS[loaded.algorithm].module().train(loaded, out, resume_from=done)
        except Exception as err:
            _raise_if_disk_full(err, out)
            raise
    except (interrupts.Interrupted, KeyboardInterrupt) as stop:
        if not isinstance(stop, interrupts.Interrupted):  # a library put Python's own SIGINT handler back
            stop = interrupts.Interrupted(signal.SIGINT)
        with interrupts.held():  # a second signal must not cut the cleanup short
            if stop.step is None and out is not None:
                discard_unstarted_run(out)  # nothing was trained: what this command wrote goes
            code = _report_interruption(stop, out, in_pipeline)
        raise Stop(code) from None
    finally:
        reward_workers.shutdown_all()  # the worker processes of `isolation: process` rewards end with the run
        with interrupts.held():
            interrupts.restore()
            release_locks()
    if summary and not summary.get("steps"):
        # Never success for nothing: TRL ends a run whose data fills no batch at step 0 with a mere warning.
        raise UserError(
            f"trained 0 steps into {out}: the training data filled no batch (fewer rows than one step takes, "
            "e.g. after dataset.limit or eval_size); use more rows or a smaller batch, then --overwrite"
        )
    if summary:
        from grpo_cli.model_card import write_run_card

        write_run_card(out)  # README.md, the model card: after summary.json, which it reads
    return Trained(out, summary or None)


def _prepare(loaded, out: Path, *, overwrite: bool, resume: bool, show_recipe) -> Path | Trained | None:
    """Check and lock the output directory, check TRL's settings: the checkpoint to resume from (None for a new
    run), or the `Trained` of a run with nothing left to train."""
    if resume:
        check_resume_matches(loaded, out)
    algorithm = ALGORITHMS[loaded.algorithm]
    # What --resume checks a checkpoint holds before trusting it (run_dir.usable_checkpoint).
    expected = {"algorithm": loaded.algorithm, "model_only": bool(loaded.trainer.get("save_only_model"))}
    if not distributed.is_main_process():
        # The main process checked and prepared the output directory; the others only train.
        return usable_checkpoint(out, **expected)[0] if resume else None
    checkpoint = prepare_output_dir(out, overwrite=overwrite, resume=resume, **expected)
    complete = resume and _already_complete(loaded, out, finished_steps(out), checkpoint)
    if complete:
        return Trained(out, None, note=complete)
    if resume and checkpoint is None and checkpoints(out):
        raise no_usable_checkpoint(out, usable_checkpoint(out, **expected)[1])
    if resume and checkpoint is None:
        raise UserError(
            f"--resume: {out} finished without saving a checkpoint (trainer.save_strategy), so it cannot "
            "train further; start again with --overwrite"
        )
    with phase("importing TRL to check the trainer settings"):
        # TRL's own checks, in a second rather than after loading
        algorithm.module().config(loaded, out)
    if distributed.wants_launcher(loaded.distributed) and not distributed.launched():
        # Start N copies of this same command under accelerate's launcher; they find WORLD_SIZE set.
        raise Stop(distributed.relaunch(loaded.distributed))
    if show_recipe is not None:
        show_recipe(loaded)
    if checkpoint is not None:
        say(f"resuming from {checkpoint}")
    return checkpoint


def _already_complete(recipe, out: Path, done: int | None, checkpoint: Path | None) -> str | None:
    """Why a finished run resumed with the same or a lower max_steps has nothing to train (a higher one continues);
    None when it has. Finished: summary.json (written when training ends) says so, and no checkpoint of its last
    steps is missing."""
    if done is None or (checkpoint is not None and checkpoint_step(checkpoint) < done):
        return None
    target = recipe.trainer.get("max_steps")
    if isinstance(target, int) and target > done:
        return None
    return (
        f"{out} is complete: it trained {done} steps (trainer.max_steps={target if target is not None else 'unset'}); "
        "nothing to do. Raise trainer.max_steps to train further."
    )


def _report_interruption(stop: interrupts.Interrupted, out: Path | None, in_pipeline: bool) -> int:
    """One line: where the run stopped and how to continue it; the exit code (130 SIGINT, 143 SIGTERM)."""
    name = signal.Signals(stop.signum).name
    if stop.reason:
        say(
            f"stopped at step {stop.step}: {stop.reason}; saved in {stop.checkpoint}; to train on anyway: "
            f"{interrupts.resume_command(out, in_pipeline=in_pipeline)}"
        )
        return stop.exit_code
    if stop.step is None:
        say(f"{name}: stopped before training began; nothing was trained")
    else:
        say(
            f"{name}: stopped at step {stop.step}, saved in {stop.checkpoint}; continue with: "
            f"{interrupts.resume_command(out, in_pipeline=in_pipeline)}"
        )
    # Under `grpo-cli train --num-processes N`, the grpo-cli process above reports the exit code.
    return 0 if os.environ.get(distributed.FORWARDED_ENV) else stop.exit_code


def _raise_if_disk_full(err: BaseException, out: Path) -> None:
    """A full disk, wherever it struck (safetensors, torch.save, a JSON file): one line and exit 2."""
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


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
