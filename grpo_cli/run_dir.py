"""A run's output directory: its marker, its lock, whole checkpoints, clearing a previous run on --overwrite.

A run directory is one grpo-cli wrote: it holds `run.json` (the marker), written before any other run file.
`run.lock` (`run_lock`) is held by the one process that writes the run, for the whole run. Checkpoints are
written under `.saving/` and renamed into place once whole, so a `checkpoint-N/` is complete or absent.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from pathlib import Path

from grpo_cli.errors import UserError
from grpo_cli.output import say, warn_once
from grpo_cli.run_files import (
    CARD_FILE,
    CARD_HASH,
    WEIGHT_FILES,
    atomic_write,
    card_is_ours,
    follow_umask,
    read_marker,
    read_recipe,
    read_summary,
    read_trainer_state,
)
from grpo_cli.run_files import MARKER_FILE as MARKER
from grpo_cli.run_lock import LOCK, lock_run
from grpo_cli.run_lock import LOCK_ENV as LOCK_ENV  # re-exported: the lock is part of what a run directory is
from grpo_cli.run_lock import RunLock as RunLock
from grpo_cli.run_lock import release_locks as release_locks

STAGING = ".saving"
FORMAT_VERSION = 1


# What a run consists of: --overwrite removes these, and nothing else (a user's notes.md or eval/ stay).
RUN_FILES = frozenset(
    {
        MARKER,
        STAGING,
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "README.md",  # the model card
        "runs",  # TensorBoard's event files (report_to: tensorboard)
        "base_model",
        "config.json",
        "generation_config.json",
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "training_args.bin",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
    }
)
# By exact shape, so that a user's `checkpoint-old/`, `checkpoint-best-by-hand/` or `.draft.tmp` is never taken for
# the run's: a trainer's checkpoint-N, a sharded model's parts, atomic_write's `.NAME.PID-HEX.tmp`.
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
RUN_PATTERNS = (
    CHECKPOINT,
    re.compile(r"model-\d+-of-\d+\.safetensors"),
    re.compile(r"\..+\.\d+-[0-9a-f]+\.tmp"),
)


def holds_run(directory: Path) -> bool:
    """Whether `directory` holds a grpo-cli run (finished or not): it carries the marker."""
    return (directory / MARKER).is_file()


def holds_old_run(directory: Path) -> bool:
    """A run from a grpo-cli without the marker (recipe.yaml with metrics.jsonl or checkpoints): resumable, never
    deleted. A recipe.yaml alone is a user's recipe."""
    if not directory.is_dir() or holds_run(directory) or not (directory / "recipe.yaml").is_file():
        return False
    return (directory / "metrics.jsonl").is_file() or bool(checkpoints(directory))


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or any(pattern.fullmatch(name) for pattern in RUN_PATTERNS)


def foreign_entries(directory: Path) -> list[str]:
    """What in a run directory is not the run's own (a user's files), sorted."""
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK and not is_run_file(p.name))


def write_marker(directory: Path, algorithm: str, manifest: dict | None = None) -> None:
    marker = {
        "format": FORMAT_VERSION,
        "written_by": "grpo-cli",
        "algorithm": algorithm,
        "run_id": secrets.token_hex(8),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        CARD_HASH: None,  # no README.md written yet: one there now is a user's (see run_files.card_is_ours)
    }
    if manifest is not None:
        marker["manifest"] = manifest
    atomic_write(directory / MARKER, json.dumps(marker, indent=2) + "\n")


def note_resume(directory: Path, manifest: dict, changed: list[str]) -> None:
    """Record a resume in run.json (when, by which command, what had changed since the run began)."""
    marker = read_marker(directory)
    if marker is None:
        return
    marker.setdefault("resumes", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": manifest.get("command"), "changed": changed}
    )
    atomic_write(directory / MARKER, json.dumps(marker, indent=2) + "\n")


def manifest_changes(before: dict, now: dict) -> list[str]:
    """What differs between the manifest a run began with and the present one, one phrase each ("transformers
    5.24.0 -> 5.25.0", "data train.jsonl changed"); the machine, the command and the recipe (a higher
    max_steps) may change freely on a resume."""
    found = []
    old_versions, new_versions = before.get("versions") or {}, now.get("versions") or {}
    for name in sorted(set(old_versions) | set(new_versions)):
        if old_versions.get(name) != new_versions.get(name):
            found.append(f"{name} {old_versions.get(name)} -> {new_versions.get(name)}")
    old_data, new_data = before.get("data") or {}, now.get("data") or {}
    for name in sorted(set(old_data) | set(new_data)):
        if old_data.get(name) != new_data.get(name):
            what = "added" if name not in old_data else "gone" if name not in new_data else "changed"
            found.append(f"data {Path(name).name} {what}")
    if before.get("model") != now.get("model"):
        found.append("the model's files changed")
    old_git, new_git = before.get("git") or {}, now.get("git") or {}
    if old_git.get("commit") != new_git.get("commit"):
        found.append(f"git commit {str(old_git.get('commit'))[:12]} -> {str(new_git.get('commit'))[:12]}")
    return found


def checkpoint_step(checkpoint: Path) -> int:
    """The training step a `checkpoint-N` directory was saved at."""
    return int(checkpoint.name.split("-")[-1])


def checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` folder, newest first, complete or not."""
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=checkpoint_step, reverse=True)


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """A checkpoint is whole when its trainer_state.json (written last) reads and names its own step."""
    try:
        state = read_trainer_state(checkpoint)
    except UserError:  # damaged: it was being written when the run stopped
        return False
    return state is not None and state.get("global_step") == checkpoint_step(checkpoint)


def last_checkpoint(directory: Path) -> Path | None:
    """The newest `checkpoint-N` folder, complete or not (see `last_complete_checkpoint`)."""
    return next(iter(checkpoints(directory)), None)


INCOMPLETE = "incomplete (it was being written when the run stopped)"


def last_complete_checkpoint(directory: Path, *, quiet: bool = True) -> Path | None:
    """The newest complete checkpoint; incomplete ones (left by an older grpo-cli) are skipped, with a notice.
    Its files are not opened: `usable_checkpoint` is what `--resume` trusts."""
    for checkpoint in checkpoints(directory):
        if checkpoint_is_complete(checkpoint):
            return checkpoint
        if not quiet:
            say(f"skipping {checkpoint.name}: {INCOMPLETE}")
    return None


def usable_checkpoint(
    directory: Path, *, algorithm: str | None = None, model_only: bool = False, quiet: bool = True
) -> tuple[Path | None, list[str]]:
    """The newest checkpoint `--resume` can load: complete, and every file it loads loads (`checkpoint_files`);
    with what was wrong with each newer one ("checkpoint-8: optimizer.pt is empty"), each said on stderr as it is
    skipped unless `quiet`. `model_only`: the run saved no optimizer state (trainer.save_only_model)."""
    from grpo_cli.algorithms.table import ALGORITHMS
    from grpo_cli.checkpoint_files import checkpoint_problems

    parts = ALGORITHMS[algorithm].checkpoint_parts if algorithm in ALGORITHMS else ()
    skipped = []
    for checkpoint in checkpoints(directory):
        if not checkpoint_is_complete(checkpoint):
            problems = [INCOMPLETE]
        else:
            problems = checkpoint_problems(checkpoint, parts=parts, model_only=model_only)
        if not problems:
            return checkpoint, skipped
        skipped.append(f"{checkpoint.name}: {'; '.join(problems)}")
        if not quiet:
            say(f"skipping {skipped[-1]}")
    return None, skipped


def no_usable_checkpoint(directory: Path, skipped: list[str]) -> UserError:
    """The one-line error for a run whose every checkpoint is damaged or incomplete (`usable_checkpoint`)."""
    shown = "; ".join(skipped[:2]) + ("; ..." if len(skipped) > 2 else "")
    return UserError(
        f"--resume: none of the {len(skipped)} checkpoints in {directory} can be loaded ({shown}), so there is "
        "nothing to resume from; start the run again with --overwrite (or restore a checkpoint from a copy)"
        if len(skipped) > 1
        else f"--resume: the only checkpoint in {directory} cannot be loaded ({shown}), so there is nothing to "
        "resume from; start the run again with --overwrite (or restore the checkpoint from a copy)"
    )


def finished_steps(directory: Path) -> int | None:
    """How many steps a finished run trained (summary.json is written when training ends), else None."""
    summary = read_summary(directory)
    try:
        return int(summary["steps"])
    except (ValueError, KeyError, TypeError):
        return None


def prepare_output_dir(
    directory: Path, *, overwrite: bool, resume: bool, algorithm: str | None = None, model_only: bool = False
) -> Path | None:
    """Check the output directory and lock it before anything heavy runs; return the checkpoint to resume from:
    the newest that loads (`usable_checkpoint`; `algorithm` and `model_only` say what a checkpoint holds).

    Nothing is deleted here: the algorithms call `begin_run` once the model and data have loaded, so a mistake
    found while loading leaves the previous run as it was.
    """
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other: pick one")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"output_dir {directory} is a file, not a directory")
    old_run = holds_old_run(directory)
    if resume and not (holds_run(directory) or old_run):
        raise UserError(f"--resume: {directory} holds no run to resume; run without --resume")
    if (
        directory.is_dir()
        and not holds_run(directory)
        and not old_run
        and any(p.name != LOCK for p in directory.iterdir())
    ):
        # --overwrite replaces runs, never a directory of other files (think `-o .`); checked before locking, so
        # that not even a lock file is left in it.
        raise UserError(
            f"{directory} is not empty and holds no grpo-cli run; give an empty or new --output-dir"
        )
    lock_run(directory)  # a second writer stops here, told who holds the run
    if resume:
        checkpoint, skipped = usable_checkpoint(
            directory, algorithm=algorithm, model_only=model_only, quiet=False
        )
        if checkpoint is None and finished_steps(directory) is not None:
            return None  # finished without checkpoints: the train command says it is complete, or why not
        if checkpoint is None and skipped:
            raise no_usable_checkpoint(directory, skipped)
        if checkpoint is None:
            raise UserError(
                f"--resume: {directory} never reached its first checkpoint, so there is nothing to resume; "
                "start it again with --overwrite"
            )
        return checkpoint
    if holds_run(directory) and not overwrite and last_complete_checkpoint(directory) is None:
        # Nothing --resume could continue from (it stopped before its first checkpoint, or finished without
        # saving one): say what works the first time.
        what = (
            "finished without a checkpoint"
            if finished_steps(directory) is not None
            else "stopped before its first checkpoint"
        )
        raise UserError(
            f"{directory} already holds a run that {what}, so there is nothing to resume; pass --overwrite "
            "to start it again, or --output-dir to write elsewhere"
        )
    if (holds_run(directory) or old_run) and not overwrite:
        raise UserError(
            f"{directory} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or --output-dir to write elsewhere"
        )
    if old_run:
        raise UserError(
            f"{directory} holds a run from an older grpo-cli, without its {MARKER} marker, so --overwrite cannot "
            "tell its files from yours: --resume continues it; to replace it, delete it yourself"
        )
    return None


def check_resume_matches(recipe, directory: Path) -> None:
    """--resume with a recipe whose algorithm, model or LoRA differ from the run's cannot load its checkpoint."""
    try:
        saved = read_recipe(directory)
    except UserError as err:
        raise UserError(f"--resume: {err}, or start again with --overwrite") from err
    if saved is None:
        return
    current = recipe.model_dump(mode="json")
    changed = [key for key in ("algorithm", "model", "lora") if key in saved and saved[key] != current[key]]
    if changed:
        raise UserError(
            f"--resume: the recipe's {', '.join(changed)} differ from the run in {directory} (see its recipe.yaml); "
            "resume with the same settings, or start a new run with --overwrite or --output-dir"
        )


def clear_previous_run(directory: Path) -> list[str]:
    """Remove what a previous run consists of (never the lock, never a user's files, never a card the user edited);
    return what was kept."""
    directory.mkdir(parents=True, exist_ok=True)
    card_edited = not card_is_ours(directory)  # read from the marker before it goes
    for path in directory.iterdir():
        if path.name == LOCK or not is_run_file(path.name) or (path.name == CARD_FILE and card_edited):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    kept = foreign_entries(directory)
    return sorted([*kept, f"{CARD_FILE} (edited since the run wrote it)"]) if card_edited else kept


def begin_run(
    directory: Path,
    algorithm: str,
    *,
    resume_from: Path | None,
    main_process: bool,
    start_model=None,
    manifest: dict | None = None,
) -> None:
    """The one place a run starts writing: called once the model and data have loaded (a mistake found while
    loading leaves the previous run as it was); clears a previous run, then writes the marker before anything else.

    `start_model` is the (model, tokenizer) the run starts from when nothing else holds its weights (built from a
    config, or merged from a previous run): it is kept in `base_model/` (see `save_base_model`). `manifest`
    (what produced the run, see `manifest.describe`) goes into run.json; on a resume it is compared with the one
    the run began with, and what changed is said and recorded. Every process calls this; only the main one writes.
    """
    if main_process and resume_from is None:
        _started_fresh.add(
            directory.resolve()
        )  # first: a signal from here on finds it (discard_unstarted_run)
        kept = clear_previous_run(directory)
        write_marker(directory, algorithm, manifest)
        if kept:
            say(f"kept in {directory}, not part of the run: {', '.join(kept)}")
    elif main_process and not holds_run(
        directory
    ):  # a run from before the marker: it is a run, say so from now on
        write_marker(directory, algorithm, manifest)
    elif main_process and manifest is not None:
        began = (read_marker(directory) or {}).get("manifest")
        changed = manifest_changes(began, manifest) if began else []
        if changed:
            warn_once(f"resuming {directory} with changes since the run began: {'; '.join(changed)}")
        note_resume(directory, manifest, changed)
    if main_process and resume_from is not None:
        _remove_checkpoints_after(directory, checkpoint_step(resume_from))
    if start_model is not None:
        save_base_model(*start_model, directory / "base_model", write=main_process and resume_from is None)


_started_fresh: set[Path] = (
    set()
)  # the runs this process started from nothing (begin_run without resume_from)


def discard_unstarted_run(directory: Path) -> None:
    """A run stopped before its first step: what this process wrote for it (the marker, base_model/, recipe.yaml,
    a half-written file) goes, when it started the run from nothing; a resumed run's files and a user's stay. The
    lock (and the directory, when this process made it and it is left empty) go as the lock is released."""
    if directory.resolve() not in _started_fresh:
        return
    _started_fresh.discard(directory.resolve())
    if directory.is_dir():
        clear_previous_run(directory)


def _remove_checkpoints_after(directory: Path, step: int) -> None:
    """A run resumed from an earlier checkpoint than its newest (those were damaged or incomplete) trains the steps
    after it again, as it drops their metrics: the newer checkpoints go, so that none of them is taken for the
    resumed run's (a save at the same step would merge into it, and save_total_limit would keep it over newer)."""
    newer = [c for c in checkpoints(directory) if checkpoint_step(c) > step]
    for checkpoint in newer:
        shutil.rmtree(checkpoint)
    if newer:
        say(f"removed {', '.join(c.name for c in reversed(newer))}: the resumed run trains those steps again")


def save_base_model(model, tokenizer, directory: Path, *, write: bool) -> None:
    """Keep a model built from a config in the run (`base_model/`) and point the model at it.

    Nothing else has its initial weights: `eval --baseline` loads them from there, and TRL, which builds a
    reference model (beta > 0, full fine-tuning) from `config.name_or_path`, finds them there too.
    """
    from accelerate import PartialState

    if write:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        follow_umask(directory, WEIGHT_FILES)
    PartialState().wait_for_everyone()  # other processes read it only once it is whole
    model.config.name_or_path = str(directory)
