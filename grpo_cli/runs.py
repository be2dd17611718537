"""A run's output directory: refusing to clobber a previous run, resuming one, what a run writes as it goes, and
reading it back (one reader per file, and the models a run holds, for `eval`, `report` and the summary).

Layout (shared by GRPO and PPO runs, so `eval` and `report` treat them alike):
    recipe.yaml        the resolved recipe
    metrics.jsonl      one JSON line per logged step, with the same names for both algorithms (METRIC_NAMES)
    summary.json       steps, wall time, first and last mean reward (written at the end; the same keys always)
    checkpoint-N/      TRL/transformers checkpoints
    base_model/        the initial weights, when the model was built from a config (nothing else has them)
    adapter_* / model  the trained adapter or full model, and the tokenizer
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from grpo_cli.errors import UserError

if TYPE_CHECKING:
    from grpo_cli.recipe import ModelSection, Recipe

# Trainer log keys -> the names metrics.jsonl uses for both algorithms. Other keys are kept as they are.
METRIC_NAMES = {
    # GRPO (trl.GRPOTrainer)
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "loss": "loss",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    # PPO (trl.experimental.ppo.PPOTrainer)
    "objective/scores": "reward",
    "objective/kl": "kl",
    "objective/entropy": "entropy",
    "loss/policy_avg": "loss",
    "lr": "learning_rate",
    # SFT (trl.SFTTrainer): loss, entropy and learning_rate as above
    "mean_token_accuracy": "token_accuracy",
    # Reward models (trl.RewardTrainer): how often chosen outscores rejected, and by how much
    "accuracy": "pairwise_accuracy",
    "margin": "margin",
}


def atomic_write(path: Path, content: str | Callable[[IO[bytes]], Any]) -> None:
    """Write a file so that readers see the old content or the new, never half of it.

    `content` is the text, or a function that writes bytes to the open file. Not tempfile.mkstemp: its files
    are private (0600), and run files are made to be read by others. An OSError becomes a one-line UserError.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8"))
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"cannot write {path}: {err.strerror or err}") from err
        raise


# ---- the run directory: marker, lock, checkpoints, clearing -------------------------------------------------
#
# A run directory is one grpo-cli wrote: it holds `run.json` (the marker), written before any other run file.
# `run.lock` is held (an exclusive flock, with the holder's pid in it) by the one process that writes the run, for
# the whole run; the OS drops it when that process dies, so a crash never leaves a stale lock. Checkpoints are
# written under `.saving/` and renamed into place once whole, so a `checkpoint-N/` is complete or absent.

MARKER = "run.json"
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
RUN_PATTERNS = ("checkpoint-*", "model-*-of-*.safetensors", ".*.tmp")


def notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    return name in RUN_FILES or any(fnmatch.fnmatch(name, pattern) for pattern in RUN_PATTERNS)


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
    }
    atomic_write(directory / MARKER, json.dumps(marker, indent=2) + "\n")


def checkpoint_step(checkpoint: Path) -> int:
    """The training step a `checkpoint-N` directory was saved at."""
    return int(checkpoint.name.split("-")[-1])


def checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` folder, newest first, complete or not."""
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=checkpoint_step, reverse=True)


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """A checkpoint is whole when its trainer_state.json (written last) reads and names its own step."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(checkpoint)


def last_checkpoint(directory: Path) -> Path | None:
    """The newest `checkpoint-N` folder, complete or not (see `last_complete_checkpoint`)."""
    return next(iter(checkpoints(directory)), None)


def last_complete_checkpoint(directory: Path, *, quiet: bool = True) -> Path | None:
    """The newest complete checkpoint; incomplete ones (left by an older grpo-cli) are skipped, with a notice."""
    for checkpoint in checkpoints(directory):
        if checkpoint_is_complete(checkpoint):
            return checkpoint
        if not quiet:
            notice(f"skipping {checkpoint.name}: incomplete (it was being written when the run stopped)")
    return None


def finished_steps(directory: Path) -> int | None:
    """How many steps a finished run trained (summary.json is written when training ends), else None."""
    try:
        summary = json.loads((directory / "summary.json").read_text())
        return int(summary["steps"])
    except (OSError, ValueError, KeyError, TypeError):
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
    """Remove what a previous run consists of (never the lock, never a user's files); return what was kept."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.name == LOCK or not is_run_file(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return foreign_entries(directory)


def begin_run(
    directory: Path, algorithm: str, *, resume_from: Path | None, main_process: bool, start_model=None
) -> None:
    """The one place a run starts writing: called once the model and data have loaded (a mistake found while
    loading leaves the previous run as it was); clears a previous run, then writes the marker before anything else.

    `start_model` is the (model, tokenizer) the run starts from when nothing else holds its weights (built from a
    config, or merged from a previous run): it is kept in `base_model/` (see `models.save_base_model`). Every
    process calls this; only the main one writes.
    """
    if main_process and resume_from is None:
        kept = clear_previous_run(directory)
        write_marker(directory, algorithm)
        if kept:
            notice(f"kept in {directory}, not part of the run: {', '.join(kept)}")
    elif main_process and not holds_run(
        directory
    ):  # a run from before the marker: it is a run, say so from now on
        write_marker(directory, algorithm)
    if start_model is not None:
        from grpo_cli.models import save_base_model

        save_base_model(*start_model, directory / "base_model", write=main_process and resume_from is None)


def rename_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """A trainer's log dict in metrics.jsonl's names (see METRIC_NAMES)."""
    row = {}
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if key in METRIC_NAMES:
            row[METRIC_NAMES[key]] = value
        elif key.startswith("rewards/") and key.endswith("/mean"):
            row[key.removesuffix("/mean")] = value  # rewards/<name>
        else:
            row[key] = value
    return row


class MetricsLog:
    """metrics.jsonl: appended and flushed line by line, so `report` can read a run in progress."""

    def __init__(self, path: Path, *, resume_from_step: int | None = None):
        self.path = path
        if resume_from_step is not None and path.exists():
            # Steps after the checkpoint will be trained, and logged, again.
            kept = [line for line in path.read_text().splitlines() if _step(line) <= resume_from_step]
            atomic_write(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf  # an unreadable line goes


# ---- reading a run directory: the one reader of each file (eval, report, train's summary) ----
#
# One rule for all of them: a file that is absent reads as None (or no rows); a file that is there but does not
# parse is the user's to repair, and says so. The exception is metrics.jsonl's last line, which a run still
# training may be halfway through writing: it is skipped.

RECIPE_FILE, METRICS_FILE, SUMMARY_FILE = "recipe.yaml", "metrics.jsonl", "summary.json"


def read_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The run's saved recipe.yaml as a mapping (the resolved recipe, absolute paths), None when it has none."""
    import yaml

    return _read_mapping(Path(run_dir) / RECIPE_FILE, yaml.safe_load, "YAML")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, None while the run is in progress (it is written at the end)."""
    return _read_mapping(Path(run_dir) / SUMMARY_FILE, json.loads, "JSON")


def _read_mapping(path: Path, parse: Callable[[str], Any], kind: str) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    except (ValueError, yaml.YAMLError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is damaged: it is not valid {kind} ({first_line}); repair or delete it"
        ) from e
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged: it should hold a mapping of keys to values; repair or delete it")
    return data


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged steps of a run, one dict per step in step order; no rows when it has no metrics.jsonl.

    The last line is skipped if it does not parse: a run appends to the log while it trains, so it may be cut
    short. A resumed run logs again the steps after its last checkpoint; the later line of a step wins.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        # A cut-off last line may end inside a multi-byte character: replace it rather than fail.
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e

    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    by_step: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            if i == last:
                break
            raise UserError(
                f"{path}, line {i + 1}, is not a JSON object with an integer 'step': delete or repair that line"
            )
        by_step[step] = row
    return [by_step[step] for step in sorted(by_step)]


def finish_run(
    trainer, output_dir: Path, *, algorithm: str, wall_time_s: float, resume_from: Path | None, extra: dict
) -> dict:
    """The end every algorithm shares: save the trained model (or adapter), then, on the main process only,
    summary.json ({} on the others)."""
    trainer.save_model(str(output_dir))
    if not trainer.accelerator.is_main_process:
        return {}
    return write_summary(
        output_dir,
        algorithm=algorithm,
        wall_time_s=wall_time_s,
        extra={**extra, "resumed_from": resume_from.name if resume_from else None},
    )


def write_summary(output_dir: Path, *, algorithm: str, wall_time_s: float, extra: dict | None = None) -> dict:
    """summary.json, from metrics.jsonl: its keys are the same whatever the run's length."""
    rows = read_metrics(output_dir)
    rewards = [r["reward"] for r in rows if r.get("reward") is not None]
    window = max(1, min(10, len(rewards) // 5))  # first/last mean over a few steps: single steps are noisy
    summary = {
        "algorithm": algorithm,
        "steps": max((r.get("step", 0) for r in rows), default=0),
        "wall_time_s": round(wall_time_s, 2),
        "first_reward": rewards[0] if rewards else None,
        "last_reward": rewards[-1] if rewards else None,
        "first_mean_reward": sum(rewards[:window]) / window if rewards else None,
        "last_mean_reward": sum(rewards[-window:]) / window if rewards else None,
        "mean_reward_window": window if rewards else None,  # the steps each of the two means is over
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    atomic_write(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


# ---- what a run directory holds to generate from: the tuned model and the model it started from ----


@dataclass
class ModelSource:
    """A model to load: where it is and how (`generation.load` loads it)."""

    # A peft adapter on `base`, a saved model directory, or a recipe's model section (Hub id, dir or from_config).
    kind: Literal["adapter", "model", "recipe"]
    path: Path | None = None  # the adapter or model directory
    spec: ModelSection | None = None  # kind "recipe"
    seed: int = 0  # kind "recipe" with from_config: the seed that built the initial weights
    base: ModelSource | None = (
        None  # what an adapter adapts; for a model dir, where a missing tokenizer comes from
    )
    run_dir: Path | None = None  # the training run it came from

    def describe(self) -> str:
        if self.kind == "adapter":
            return f"adapter {self.path} on {self.base.describe()}"
        if self.kind == "model":
            return str(self.path)
        if self.spec.from_config is not None:
            return f"the recipe's model.from_config (seed {self.seed})"
        return self.spec.name_or_path

    def identity(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind}
        if self.path is not None:
            info["path"] = str(self.path)
        if self.kind == "recipe":
            info["model"] = self.spec.model_dump(mode="json", exclude_none=True)
            if self.spec.from_config is not None:
                info["seed"] = self.seed
        if self.kind == "adapter":
            info["base"] = self.base.identity()
        if self.run_dir is not None:
            info["run_dir"] = str(self.run_dir)
            info["run_summary"] = read_summary(self.run_dir)
        return info


def run_root(directory: Path) -> Path:
    """The run a directory belongs to: itself, or its parent for a checkpoint-N inside a run."""
    if not (directory / RECIPE_FILE).is_file() and (directory.parent / RECIPE_FILE).is_file():
        return directory.parent
    return directory


def run_base(root: Path, recipe_base: ModelSource) -> ModelSource:
    """The model a run started from: its base_model/, else its recipe's model, else the given recipe's."""
    from grpo_cli.recipe import ModelSection

    if (root / "base_model" / "config.json").is_file():
        return ModelSource("model", path=(root / "base_model").resolve(), base=recipe_base)
    run_recipe = read_recipe(root) or {}
    try:
        spec = ModelSection.model_validate(run_recipe["model"])
        return ModelSource("recipe", spec=spec, seed=int(run_recipe.get("seed", recipe_base.seed)))
    except (KeyError, TypeError, ValueError):
        return recipe_base


def resolve_models(
    recipe: Recipe, adapter: Path | None, model: Path | None
) -> tuple[ModelSource | None, ModelSource]:
    """(the tuned model or None, the base model) for `--adapter RUN_DIR`, `--model PATH` or neither."""
    recipe_base = ModelSource("recipe", spec=recipe.model, seed=recipe.seed)
    if adapter is not None and model is not None:
        raise UserError("--adapter and --model both name a model to evaluate: give one")
    if model is not None:
        if not model.is_dir():
            raise UserError(f"--model {model}: no such directory; give a model saved with save_pretrained")
        if (model / "adapter_config.json").is_file():
            raise UserError(f"--model {model} holds a peft adapter: pass it as --adapter {model}")
        if not (model / "config.json").is_file():
            raise UserError(
                f"--model {model} has no config.json: give a directory saved with save_pretrained"
            )
        return ModelSource("model", path=model.resolve(), base=recipe_base), recipe_base
    if adapter is None:
        return None, recipe_base
    if not adapter.is_dir():
        raise UserError(
            f"--adapter {adapter}: no such directory; give the output directory of a training run"
        )
    root = run_root(adapter)
    base = run_base(root, recipe_base)
    if (adapter / "adapter_config.json").is_file():
        kind = "adapter"
    elif (adapter / "config.json").is_file():
        kind = "model"
    else:
        checkpoint = last_checkpoint(adapter)
        hint = (
            f"; is the run unfinished? evaluate its last checkpoint with --adapter {checkpoint}"
            if checkpoint
            else "; give the output directory of a finished training run"
        )
        raise UserError(
            f"--adapter {adapter} holds neither a peft adapter (adapter_config.json) nor a model (config.json){hint}"
        )
    return ModelSource(kind, path=adapter.resolve(), base=base, run_dir=root.resolve()), base
