"""A run's output directory: its marker, its lock, whole checkpoints, clearing a previous run on --overwrite.

A run directory is one grpo-cli wrote: it holds `run.json` (the marker), written before any other run file.
`run.lock` is held (an exclusive flock, with the holder's pid in it) by the one process that writes the run, for
the whole run; the OS drops it when that process dies, so a crash never leaves a stale lock. Checkpoints are
written under `.saving/` and renamed into place once whole, so a `checkpoint-N/` is complete or absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from grpo_cli.errors import UserError
from grpo_cli.output import say
from grpo_cli.run_files import (
    CARD_FILE,
    CARD_HASH,
    WEIGHT_FILES,
    atomic_write,
    card_is_ours,
    follow_umask,
    read_recipe,
    read_summary,
    read_trainer_state,
)
from grpo_cli.run_files import MARKER_FILE as MARKER

LOCK = "run.lock"
STAGING = ".saving"
FORMAT_VERSION = 1
LOCK_ENV = (
    "GRPO_CLI_RUN_LOCK"  # set while a process holds the lock: the processes it launches must not take it
)


# What a run consists of: --overwrite removes these, and nothing else (a user's notes.md or eval/ stay).
RUN_FILES = frozenset(
    {
        MARKER,
        STAGING,
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "README.md",  # the model card
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


def write_marker(directory: Path, algorithm: str) -> None:
    marker = {
        "format": FORMAT_VERSION,
        "written_by": "grpo-cli",
        "algorithm": algorithm,
        "run_id": secrets.token_hex(8),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        CARD_HASH: None,  # no README.md written yet: one there now is a user's (see run_files.card_is_ours)
    }
    atomic_write(directory / MARKER, json.dumps(marker, indent=2) + "\n")


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


def last_complete_checkpoint(directory: Path, *, quiet: bool = True) -> Path | None:
    """The newest complete checkpoint; incomplete ones (left by an older grpo-cli) are skipped, with a notice."""
    for checkpoint in checkpoints(directory):
        if checkpoint_is_complete(checkpoint):
            return checkpoint
        if not quiet:
            say(f"skipping {checkpoint.name}: incomplete (it was being written when the run stopped)")
    return None


def finished_steps(directory: Path) -> int | None:
    """How many steps a finished run trained (summary.json is written when training ends), else None."""
    summary = read_summary(directory)
    try:
        return int(summary["steps"])
    except (ValueError, KeyError, TypeError):
        return None


class RunLock:
    """The exclusive lock on a run directory (`run.lock`, flock): one writer at a time, released by the OS."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK
        self.fd: int | None = None
        self.created_directory = False

    def acquire(self) -> None:
        import fcntl

        if os.environ.get(LOCK_ENV) == str(self.directory.resolve()):
            return  # the grpo-cli process that launched this one holds it
        self.created_directory = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot create {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.directory} is in use by another grpo-cli process (pid {holder}); wait for it to end, "
                "stop it, or write elsewhere with --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        os.environ[LOCK_ENV] = str(self.directory.resolve())

    def release(self) -> None:
        """Unlock; a directory this process created and left with nothing but the lock goes too."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if [p.name for p in self.directory.iterdir()] == [LOCK]:
                self.path.unlink()
                if self.created_directory:
                    self.directory.rmdir()
        os.close(self.fd)
        self.fd = None
        os.environ.pop(LOCK_ENV, None)


_held_locks: list[RunLock] = []  # held until the command ends (`release_locks`) or the process dies


def lock_run(directory: Path) -> RunLock:
    lock = RunLock(directory)
    lock.acquire()
    _held_locks.append(lock)
    return lock


def release_locks() -> None:
    while _held_locks:
        _held_locks.pop().release()


def prepare_output_dir(directory: Path, *, overwrite: bool, resume: bool) -> Path | None:
    """Check the output directory and lock it before anything heavy runs; return the checkpoint to resume from.

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
        checkpoint = last_complete_checkpoint(directory, quiet=False)
        if checkpoint is None and finished_steps(directory) is not None:
            return None  # finished without checkpoints: the train command says it is complete, or why not
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
    directory: Path, algorithm: str, *, resume_from: Path | None, main_process: bool, start_model=None
) -> None:
    """The one place a run starts writing: called once the model and data have loaded (a mistake found while
    loading leaves the previous run as it was); clears a previous run, then writes the marker before anything else.

    `start_model` is the (model, tokenizer) the run starts from when nothing else holds its weights (built from a
    config, or merged from a previous run): it is kept in `base_model/` (see `save_base_model`). Every
    process calls this; only the main one writes.
    """
    if main_process and resume_from is None:
        kept = clear_previous_run(directory)
        write_marker(directory, algorithm)
        if kept:
            say(f"kept in {directory}, not part of the run: {', '.join(kept)}")
    elif main_process and not holds_run(
        directory
    ):  # a run from before the marker: it is a run, say so from now on
        write_marker(directory, algorithm)
    if start_model is not None:
        save_base_model(*start_model, directory / "base_model", write=main_process and resume_from is None)


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
