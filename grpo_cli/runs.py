"""A run's output directory: refusing to clobber a previous run, resuming one, and what a run writes as it goes.

Layout (shared by GRPO and PPO runs, so `eval` and `report` treat them alike):
    recipe.yaml        the resolved recipe
    metrics.jsonl      one JSON line per logged step, with the same names for both algorithms (METRIC_NAMES)
    summary.json       steps, wall time, first and last mean reward (written at the end)
    checkpoint-N/      TRL/transformers checkpoints
    base_model/        the initial weights, when the model was built from a config (nothing else has them)
    adapter_* / model  the trained adapter or full model, and the tokenizer
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from grpo_cli.errors import UserError

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


RUN_MARKERS = ("recipe.yaml", "metrics.jsonl", "summary.json", "adapter_config.json")


def holds_run(directory: Path) -> bool:
    """Whether `directory` holds a grpo-cli run (finished or not), as opposed to nothing or unrelated files."""
    if not directory.is_dir():
        return False
    return any((directory / name).exists() for name in RUN_MARKERS) or last_checkpoint(directory) is not None


def checkpoint_step(checkpoint: Path) -> int:
    """The training step a `checkpoint-N` directory was saved at."""
    return int(checkpoint.name.split("-")[-1])


def last_checkpoint(directory: Path) -> Path | None:
    checkpoints = [
        p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
    ]
    return max(checkpoints, key=checkpoint_step, default=None)


def prepare_output_dir(directory: Path, *, overwrite: bool, resume: bool) -> Path | None:
    """Check the output directory before anything heavy runs; return the checkpoint to resume from, if any.

    Nothing is deleted here: the algorithms call `clear_previous_run` once the model and data have loaded, so a
    mistake found while loading leaves the previous run as it was.
    """
    if overwrite and resume:
        raise UserError("--overwrite and --resume contradict each other: pick one")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"output_dir {directory} is a file, not a directory")
    if resume:
        if not holds_run(directory):
            raise UserError(f"--resume: {directory} holds no run to resume; run without --resume")
        checkpoint = last_checkpoint(directory)
        if checkpoint is None:
            raise UserError(
                f"--resume: {directory} has no checkpoint-* to resume from "
                "(set trainer.save_steps lower next time); use --overwrite to start again"
            )
        return checkpoint
    if holds_run(directory) and not overwrite:
        raise UserError(
            f"{directory} already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or --output-dir to write elsewhere"
        )
    if not holds_run(directory) and directory.is_dir() and any(directory.iterdir()):
        # --overwrite replaces runs, never a directory of other files (think `-o .`).
        raise UserError(
            f"{directory} is not empty and holds no grpo-cli run; give an empty or new --output-dir"
        )
    return None


def check_resume_matches(recipe, directory: Path) -> None:
    """--resume with a recipe whose algorithm, model or LoRA differ from the run's cannot load its checkpoint."""
    import yaml

    saved_path = directory / "recipe.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    current = recipe.model_dump(mode="json")
    changed = [key for key in ("algorithm", "model", "lora") if key in saved and saved[key] != current[key]]
    if changed:
        raise UserError(
            f"--resume: the recipe's {', '.join(changed)} differ from the run in {directory} (see its recipe.yaml); "
            "resume with the same settings, or start a new run with --overwrite or --output-dir"
        )


def clear_previous_run(directory: Path) -> None:
    if directory.is_dir():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


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


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written
    return rows


def write_summary(output_dir: Path, *, algorithm: str, wall_time_s: float, extra: dict | None = None) -> dict:
    rows = read_metrics(output_dir / "metrics.jsonl")
    rewards = [r["reward"] for r in rows if r.get("reward") is not None]
    window = max(1, min(10, len(rewards) // 5))  # first/last mean over a few steps: single steps are noisy
    summary = {
        "algorithm": algorithm,
        "steps": max((r.get("step", 0) for r in rows), default=0),
        "wall_time_s": round(wall_time_s, 2),
        "first_reward": rewards[0] if rewards else None,
        "last_reward": rewards[-1] if rewards else None,
        f"first_{window}_steps_mean_reward": sum(rewards[:window]) / window if rewards else None,
        f"last_{window}_steps_mean_reward": sum(rewards[-window:]) / window if rewards else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    atomic_write(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
