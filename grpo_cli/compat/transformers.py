"""What grpo-cli relies on in transformers beyond its public API: its Trainer's checkpoint saving (staged by
`callbacks.RunGuard`), checkpoint rotation, and the learning-rate schedule its callbacks see."""

from __future__ import annotations

from pathlib import Path

from grpo_cli.compat import Relies

# The floor (pyproject.toml, .ci/floors.sh) and the newest release checked.
CHECKED_AGAINST = {"transformers": ("5.6.0", "5.24.0")}

RELIES_ON = (
    Relies(
        "transformers",
        "Trainer._save_checkpoint",
        params=("model", "trial"),
        source=("self._get_output_dir(",),
        why="stage_checkpoint_saves wraps it; it writes checkpoint-N under the output_dir it is given",
    ),
    Relies(
        "transformers",
        "Trainer._get_output_dir",
        source=("self.args.output_dir",),
        why="RunGuard points args.output_dir at .saving/ while a checkpoint is written",
    ),
    Relies(
        "transformers.trainer_utils",
        "rotate_checkpoints",
        params=("output_dir", "save_total_limit", "best_model_checkpoint"),
        why="RunGuard rotates once a checkpoint is in place (the trainer's own rotation sees only .saving/)",
    ),
    Relies(
        "transformers",
        "Trainer.create_scheduler",
        params=("num_training_steps", "optimizer"),
        why="replace_schedule builds a schedule over a different length",
    ),
    Relies(
        "transformers.trainer_callback",
        "CallbackHandler.__init__",
        params=("lr_scheduler",),
        source=("self.lr_scheduler = lr_scheduler",),
        why="replace_schedule hands the new schedule to the callbacks too",
    ),
    Relies(
        "transformers.trainer_callback",
        "CallbackHandler.call_event",
        source=("for callback in self.callbacks",),
        why="trackers_last orders the trackers of report_to after our callbacks: they see events in list order",
    ),
    Relies(
        "transformers.integrations",
        "INTEGRATION_TO_CALLBACK",
        why="trackers_last finds the trackers' callbacks among a trainer's by their classes",
    ),
    Relies(
        "transformers",
        "Trainer._save",
        source=("self.is_distributed_loading_by_transformers",),
        why="compat.trl.unwrap_for_ddp sets it on TRL's PPOTrainer, which never runs Trainer.__init__",
        since="5.19.0",
    ),
    Relies(
        "transformers",
        "PretrainedConfig.name_or_path",
        source=("self._name_or_path =",),
        why="models.save_base_model sets it; TRL reads _name_or_path (compat.trl)",
    ),
    Relies(
        "transformers.trainer_pt_utils",
        "safe_globals",
        source=("torch.serialization.safe_globals(",),
        why="checkpoint_files checks rng_state*.pth under the numpy allowlist the Trainer loads them with",
    ),
    Relies(
        "transformers.models.auto.modeling_auto",
        "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
        why="trainer_fields.generate lists the model types from_config can build (no public list exists)",
    ),
)


def stage_checkpoint_saves(trainer, save) -> None:
    """Route the trainer's checkpoint saving through `save(original, model, trial)`, where `original(model,
    trial)` is the trainer's own `_save_checkpoint` (TRL's PPOTrainer and transformers' Trainer both call it)."""
    original = trainer._save_checkpoint
    trainer._save_checkpoint = lambda model, trial: save(original, model, trial)


def rng_state_allowlist():
    """The context (torch.serialization.safe_globals) under which the Trainer loads a checkpoint's rng_state*.pth
    with weights_only=True: numpy's random state is numpy arrays and dtypes."""
    from transformers.trainer_pt_utils import safe_globals

    return safe_globals()


def rotate_checkpoints(run_dir: Path, save_total_limit: int, best_model_checkpoint: str | None) -> None:
    """Delete `run_dir`'s oldest checkpoints beyond `save_total_limit`, keeping `best_model_checkpoint`."""
    from transformers.trainer_utils import rotate_checkpoints

    rotate_checkpoints(str(run_dir), save_total_limit, best_model_checkpoint)


def replace_schedule(trainer, num_training_steps: int, optimizer) -> None:
    """A fresh learning-rate schedule of `num_training_steps` on `optimizer`, for the trainer and its callbacks
    (which keep their own reference to it)."""
    trainer.lr_scheduler = None
    trainer.create_scheduler(num_training_steps=num_training_steps, optimizer=optimizer)
    trainer.callback_handler.lr_scheduler = trainer.lr_scheduler


def trackers_last(trainer, before, after) -> None:
    """Move the trackers of report_to (TensorBoard, W&B, ...) behind the trainer's other callbacks, between
    `before` and `after`: they then see a step's logs complete (PPO's extra metrics are added by our callbacks) and
    as `before` renamed them, and `after` sees the end of training after them. transformers puts them first;
    callbacks see an event in list order."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    kinds = tuple(INTEGRATION_TO_CALLBACK.values())
    callbacks = trainer.callback_handler.callbacks
    trackers = [c for c in callbacks if isinstance(c, kinds)]
    callbacks[:] = [c for c in callbacks if not isinstance(c, kinds)] + [before, *trackers, after]
