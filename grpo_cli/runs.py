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

import json
import math
import os
import secrets
import shutil
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
    saved = read_recipe(directory)
    if saved is None:
        return
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
        raise UserError(f"{path} is not valid {kind} ({e}): repair or delete it") from e
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a mapping of keys to values: repair or delete it")
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
