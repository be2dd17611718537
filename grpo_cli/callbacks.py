"""Trainer callbacks shared by GRPO and PPO: metrics.jsonl and the live progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import PrinterCallback, TrainerCallback

from grpo_cli.runs import MetricsLog, read_metrics, rename_metrics


class RunLogger(TrainerCallback):
    """Writes every logged step to metrics.jsonl (main process only) and draws a progress bar with live reward."""

    def __init__(self, output_dir: Path, *, resume_from_step: int | None = None):
        self.output_dir = output_dir
        self.resume_from_step = resume_from_step
        self.metrics: MetricsLog | None = None
        self.progress: Progress | None = None
        self.task = None
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # wall time of the run before a resume

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        path = self.output_dir / "metrics.jsonl"
        if self.resume_from_step is not None:
            previous = [r for r in read_metrics(self.output_dir) if r.get("step", 0) <= self.resume_from_step]
            self.elapsed_before = max((r.get("time") or 0.0 for r in previous), default=0.0)
        self.metrics = MetricsLog(path, resume_from_step=self.resume_from_step)
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, reward="-", rate=""
        )
        self._first_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is None:
            return
        done = state.global_step - self._first_step
        seconds = time.monotonic() - self.started
        rate = f"{done / seconds:.2f} step/s" if seconds > 0 and done else ""
        self.progress.update(self.task, completed=state.global_step, rate=rate)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.metrics is None or not logs or "train_runtime" in logs:
            return
        row = {
            "step": state.global_step,
            "time": round(self.elapsed_before + time.monotonic() - self.started, 3),
        }
        row.update(rename_metrics(logs))
        self.metrics.write(row)
        if row.get("reward") is not None:
            self.progress.update(self.task, reward=f"{row['reward']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
        if self.metrics is not None:
            self.metrics.close()

    @property
    def wall_time(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started


def quiet_trainer(trainer) -> None:
    """Our progress bar and metrics.jsonl replace the trainer's printing of each log dict, and of TRL 1.12 PPO's
    "===training policy===" banner (the progress bar says as much); everything else it prints still shows."""
    trainer.remove_callback(PrinterCallback)
    accelerator = trainer.accelerator
    print_ = accelerator.print

    def print_all_but_the_banner(*args, **kwargs):
        if args != ("===training policy===",):
            print_(*args, **kwargs)

    accelerator.print = print_all_but_the_banner
