"""Trainer callbacks shared by GRPO and PPO: metrics.jsonl and the live progress bar; RunGuard (checkpoints
whole or not at all, signals, resumed schedules)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import PrinterCallback, TrainerCallback

from grpo_cli import interrupts
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.compat import accelerate as accelerate_compat
from grpo_cli.compat import torch as torch_compat
from grpo_cli.compat import transformers as transformers_compat
from grpo_cli.compat.trl import PPO_BANNER
from grpo_cli.output import say, warn_once
from grpo_cli.run_files import (
    WEIGHT_FILES,
    MetricsLog,
    card_is_ours,
    follow_umask,
    metric_name,
    read_metrics,
    read_trainer_state,
    record_card,
    rename_metrics,
)

# What the progress shows of a run, by what its algorithm learns from (the algorithm table's `learns_from`):
# metrics.jsonl's names of the numbers that say whether it is learning.
PROGRESS_METRICS: dict[str, tuple[str, ...]] = {
    "rewards": ("reward",),
    "demonstrations": ("loss", "token_accuracy"),
    "chosen/rejected pairs": ("loss", "pairwise_accuracy"),
}
# Without a terminal (nohup, CI, Slurm, `> log`), a plain progress line at least every tenth of the run or every
# PROGRESS_SECONDS, whichever comes first, and never two for one step.
PROGRESS_LINES = 10
PROGRESS_SECONDS = 30.0


def progress_metrics(algorithm: str) -> tuple[str, ...]:
    """The metrics the progress shows for a run of `algorithm` (see PROGRESS_METRICS)."""
    return PROGRESS_METRICS[ALGORITHMS[algorithm].learns_from]


class RunLogger(TrainerCallback):
    """Writes every logged step to metrics.jsonl (main process only) and shows progress: a live bar in a terminal,
    a plain line now and then elsewhere (see PROGRESS_LINES), with the metrics that say whether the run learns.

    It also watches the `rewards` (scoring.RewardCall) an RL run scores with: a reward whose `on_error` policy
    replaced much of a step's scores is warned about, once, and `reward_errors` sums them up for summary.json.
    """

    def __init__(
        self, output_dir: Path, *, algorithm: str, resume_from_step: int | None = None, rewards: list = ()
    ):
        self.output_dir = output_dir
        self.resume_from_step = resume_from_step
        self.rewards = list(rewards)
        self._counted = {id(call): (0, 0) for call in self.rewards}  # (completions, errors) at the last log
        self._warned: set[str] = set()
        self.columns = progress_metrics(algorithm)
        self.latest: dict[str, float] = {}  # the last logged value of each column
        self.metrics: MetricsLog | None = None
        self.progress: Progress | None = None
        self.lines = False  # plain progress lines instead of the bar (stderr is not a terminal)
        self.task = None
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # wall time of the run before a resume
        self._first_step = 0
        self._max_steps = 0
        self._said_step = 0  # the step of the last plain line
        self._said_at = self.started

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        path = self.output_dir / "metrics.jsonl"
        if self.resume_from_step is not None:
            previous = [r for r in read_metrics(self.output_dir) if r.get("step", 0) <= self.resume_from_step]
            self.elapsed_before = max((r.get("time") or 0.0 for r in previous), default=0.0)
        self.metrics = MetricsLog(path, resume_from_step=self.resume_from_step)
        self.started = self._said_at = time.monotonic()
        self._first_step = self._said_step = state.global_step
        self._max_steps = state.max_steps
        # Looked up now, as output.say does: CliRunner and redirections replace it.
        self.lines = not sys.stderr.isatty()
        if self.lines:
            return
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            *(TextColumn(f"{name} {{task.fields[{name}]}}") for name in self.columns),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train",
            total=state.max_steps,
            completed=state.global_step,
            rate="",
            **dict.fromkeys(self.columns, "-"),
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            rate = self._rate(state.global_step)
            shown = f"{rate:.2f} step/s" if rate else ""
            self.progress.update(self.task, completed=state.global_step, rate=shown)
        elif self.lines and self.metrics is not None and not _log_follows(args, state):
            # TRL's PPO logs a step before it ends, transformers' Trainer after: the line waits for the step's
            # metrics when they are coming (on_log), and goes with the last ones when they are not.
            self._say_progress(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.metrics is None or not logs or "train_runtime" in logs:
            return
        row = {
            "step": state.global_step,
            "time": round(self.elapsed_before + time.monotonic() - self.started, 3),
        }
        row.update(rename_metrics(logs))
        self.metrics.write(row)
        self._watch_rewards(state.global_step)
        self.latest.update({name: row[name] for name in self.columns if row.get(name) is not None})
        if self.progress is not None:
            self.progress.update(self.task, **{name: _shown(self.latest.get(name)) for name in self.columns})
        elif self.lines:
            self._say_progress(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def record(self, step: int, values: dict) -> None:
        """Another metrics.jsonl row at `step` (held-out evaluation's); readers merge it with the step's own."""
        if self.metrics is not None:
            self.metrics.write({"step": step, "time": round(self.wall_time, 3), **values})

    @property
    def wall_time(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def reward_errors(self) -> dict[str, dict]:
        """summary.json's `reward_errors`: for each reward, the completions it scored in this process, how many
        were errors and the first one's text ({} for algorithms without rewards)."""
        return {call.__name__: call.tally.as_dict() for call in self.rewards}

    def _watch_rewards(self, step: int) -> None:
        """Warn, once per reward, when a reward failed on much of what it scored since the last logged step."""
        for call in self.rewards:
            before = self._counted[id(call)]
            self._counted[id(call)] = (call.tally.completions, call.tally.errors)
            warning = call.error_warning(
                call.tally.completions - before[0], call.tally.errors - before[1], step
            )
            if warning and call.__name__ not in self._warned:
                self._warned.add(call.__name__)
                warn_once(warning)

    def _rate(self, step: int) -> float:
        """Steps per second in this process (a resumed run's earlier steps not counted)."""
        seconds = time.monotonic() - self.started
        done = step - self._first_step
        return done / seconds if seconds > 0 and done > 0 else 0.0

    def _say_progress(self, step: int) -> None:
        """The plain progress line for `step`, when one is due (see PROGRESS_LINES)."""
        now = time.monotonic()
        every = max(1, math.ceil(self._max_steps / PROGRESS_LINES))
        due = (
            step >= self._max_steps
            or step - self._said_step >= every
            or now - self._said_at >= PROGRESS_SECONDS
        )
        if step <= self._said_step or not due:
            return
        self._said_step, self._said_at = step, now
        rate = self._rate(step)
        left = _clock((self._max_steps - step) / rate) if rate else "-"
        metrics = ", ".join(f"{name} {_shown(self.latest.get(name))}" for name in self.columns)
        say(f"step {step}/{self._max_steps}: {metrics}, {rate:.2f} step/s, ETA {left}")


class ToolMetrics(TrainerCallback):
    """Adds each logged step's tool calls and failures per tool (`tool_calls.ToolTally`) to the metrics, before
    RunLogger writes them: `tools/<name>/calls`, `tools/<name>/failures`, `tools/reset_failures`."""

    def __init__(self, tally):
        self.tally = tally

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "train_runtime" not in logs:
            logs.update(self.tally.take())


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _clock(seconds: float) -> str:
    """H:MM:SS, as the bar's time columns show it."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _log_follows(args, state) -> bool:
    """Whether transformers' Trainer logs the step that just ended (`logging_strategy: steps`; an on_log follows)."""
    steps = args.logging_steps
    if getattr(args, "logging_strategy", "steps") != "steps" or not steps:
        return False
    every = steps if steps >= 1 else max(1, math.ceil(steps * state.max_steps))  # a float: a share of the run
    return state.global_step % every == 0 or (args.logging_first_step and state.global_step == 1)


def quiet_trainer(trainer) -> None:
    """Our progress bar and metrics.jsonl replace the trainer's printing of each log dict, and of TRL 1.12 PPO's
    "===training policy===" banner (the progress bar says as much); everything else it prints still shows."""
    trainer.remove_callback(PrinterCallback)
    accelerate_compat.drop_printed_line(trainer.accelerator, PPO_BANNER)


class RunGuard(TrainerCallback):
    """What keeps a run's work safe, for GRPO's and PPO's trainers alike (install with `guard`).

    - Checkpoints appear whole or not at all: the trainer writes `checkpoint-N` under `.saving/` (its output_dir
      points there while it saves), and once every `on_save` callback has added its part (PPO's value model),
      this one, the last callback, renames it into the run directory.
    - SIGINT/SIGTERM (see `interrupts`): at the end of the step that was running, the trainer is told to save;
      once the checkpoint is in place, `Interrupted` ends training. TRL's PPOTrainer ignores
      `should_training_stop` but honours `should_save`, so raising is the one way that works for both. With
      several processes the flag is shared at every step end, so all of them stop at the same step.
    - On resume, the learning rate of the next step comes from the schedule at the resumed step (see
      `_continue_schedule`).
    """

    def __init__(self, trainer, logger: RunLogger):
        self.trainer = trainer
        self.logger = logger
        self.run_dir = Path(trainer.args.output_dir)
        self.staged: Path | None = None

    # -- checkpoints --

    def save_checkpoint(self, original, model, trial):
        """The trainer's `_save_checkpoint`, pointed at `.saving/` (see the class docstring)."""
        import shutil

        from grpo_cli.run_dir import STAGING

        args = self.trainer.args
        staging = self.run_dir / STAGING
        self.staged = staging / f"checkpoint-{self.trainer.state.global_step}"
        if args.should_save and self.staged.exists():
            shutil.rmtree(self.staged)  # left by a save that failed
        self.trainer.accelerator.wait_for_everyone()
        args.output_dir = str(staging)
        try:
            original(model, trial)
        except BaseException:
            args.output_dir = str(self.run_dir)
            raise

    def on_save(self, args, state, control, **kwargs):
        import os
        import shutil

        args.output_dir = str(self.run_dir)
        staged, self.staged = self.staged, None
        self.trainer.accelerator.wait_for_everyone()  # every process wrote its part (RNG states)
        if staged is not None and args.should_save:
            final = self.run_dir / staged.name
            if final.exists():  # parts a callback wrote to the final name: they join the staged checkpoint
                for part in final.iterdir():
                    if not (staged / part.name).exists():
                        os.replace(part, staged / part.name)
                shutil.rmtree(final)
            follow_umask(staged, WEIGHT_FILES)  # before it is in place: readers see it whole and readable
            os.replace(staged, final)
            card = staged.parent / "README.md"  # TRL's model card, written beside the checkpoint
            if card.exists() and card_is_ours(self.run_dir):  # never over a card the user edited
                os.replace(card, self.run_dir / "README.md")
                record_card(self.run_dir)
            shutil.rmtree(staged.parent, ignore_errors=True)
            if args.save_total_limit:
                transformers_compat.rotate_checkpoints(
                    self.run_dir, args.save_total_limit, state.best_model_checkpoint
                )
        self.trainer.accelerator.wait_for_everyone()
        if interrupts.requested():
            self.logger.on_train_end(args, state, control)
            raise interrupts.Interrupted(
                interrupts.requested(),
                state.global_step,
                self.run_dir / f"checkpoint-{state.global_step}",
                reason=interrupts.reason(),
            )

    # -- signals --

    def on_train_begin(self, args, state, control, **kwargs):
        interrupts.arm()
        if state.global_step > 0:
            self._continue_schedule(state)

    def on_step_end(self, args, state, control, **kwargs):
        from grpo_cli import distributed

        if distributed.world_size() > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([interrupts.requested()], device=self.trainer.accelerator.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item():
                interrupts.request(int(flag.item()))
        if interrupts.requested():
            control.should_save = True

    # -- resume --

    def _continue_schedule(self, state) -> None:
        """The next step's learning rate, from the schedule at the resumed step over this run's max_steps.

        The optimizer's state brings back the learning rate the checkpoint's own last step used; with a longer
        max_steps that is the old schedule's (0.0 at the end of a linear decay), and the rate would jump after one
        step. The schedule is the one for the new length, as if the run had been planned that long from the start.
        """
        scheduler, optimizer = self.trainer.lr_scheduler, self.trainer.optimizer
        rates = torch_compat.schedule_rates(scheduler, state.global_step)
        if rates is None or optimizer is None:
            return
        before = [group["lr"] for group in optimizer.param_groups]
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        torch_compat.set_last_rates(scheduler, rates)
        saved = read_trainer_state(self.run_dir / f"checkpoint-{state.global_step}") or {}
        old_max = saved.get("max_steps")
        if state.is_world_process_zero and old_max and old_max != state.max_steps:
            say(
                f"max_steps {old_max} -> {state.max_steps}: the learning-rate schedule ({args_name(self.trainer)}) "
                f"now spans {state.max_steps} steps, as if planned so from the start; step {state.global_step + 1} "
                f"runs at lr {rates[0]:.3g} (the old schedule was at {before[0]:.3g})"
            )


def args_name(trainer) -> str:
    kind = trainer.args.lr_scheduler_type
    return getattr(kind, "value", str(kind))


class TrackerNames(TrainerCallback):
    """Renames a step's logs to metrics.jsonl's names before the trackers of report_to (TensorBoard, W&B, trackio,
    MLflow) see them, so that they show the same names as metrics.jsonl and `report`: `train/<name>`, and
    `eval/<name>` for the held-out evaluation's (transformers' trackers prefix `train/` to every name but those
    starting `eval_`, which become `eval/`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            renamed = {_tracker_name(metric_name(key)): value for key, value in logs.items()}
            logs.clear()
            logs.update(renamed)


class TrackersDone(TrainerCallback):
    """Ends the W&B run transformers' WandbCallback started and leaves open (its TrackioCallback ends its own): an
    offline run ended only at interpreter exit lacks its summary and config files."""

    def on_train_end(self, args, state, control, **kwargs):
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None and state.is_world_process_zero:
            wandb.finish()


def _tracker_name(name: str) -> str:
    return "eval_" + name.removeprefix("eval/") if name.startswith("eval/") else name


def guard(trainer, logger: RunLogger) -> RunGuard:
    """Install RunGuard on a trainer (after its other callbacks: it must see `on_save` last); the trackers of
    report_to go just before it, behind TrackerNames (they see each step's logs whole, in metrics.jsonl's names)."""
    transformers_compat.trackers_last(trainer, TrackerNames(), TrackersDone())
    run_guard = RunGuard(trainer, logger)
    transformers_compat.stage_checkpoint_saves(trainer, run_guard.save_checkpoint)
    trainer.add_callback(run_guard)
    return run_guard


def train_to_the_end(
    trainer,
    logger: RunLogger,
    recipe,
    output_dir: Path,
    *,
    algorithm: str,
    resume_from: Path | None,
    main_process: bool,
    evaluation=None,
) -> dict:
    """What a run of a transformers-Trainer-based algorithm (GRPO, SFT, reward) does once its trainer is built:
    our progress and run guard installed, recipe.yaml written, training (from the checkpoint when resuming), then
    the shared end (`run_files.finish_run`). `evaluation` (eval_during_training.for_run): held-out evaluation. PPO's TRL trainer takes no checkpoint and needs its workarounds first."""
    from grpo_cli.models import trainable_parameters
    from grpo_cli.run_files import atomic_write, finish_run

    quiet_trainer(trainer)
    if evaluation is not None:  # eval_during_training.HeldOutEval: held-out evaluation every N steps
        evaluation.install(trainer, lambda: trainer.model)
    guard(trainer, logger)  # after the other callbacks: checkpoints whole or not at all, signals, resumed lr
    if main_process:
        atomic_write(output_dir / "recipe.yaml", recipe.to_yaml())
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return finish_run(
        trainer,
        output_dir,
        algorithm=algorithm,
        wall_time_s=logger.wall_time,
        resume_from=resume_from,
        extra={
            "trainable_parameters": trainable_parameters(trainer.model),
            "reward_errors": logger.reward_errors(),
            **(evaluation.summary() if evaluation is not None else {}),
        },
    )
