"""Held-out evaluation during training (`eval.every: N`), and the reward-hacking alarm over it.

Before the first step, every N steps and at the last step, the model being trained (no second load: the trainer's own, its LoRA adapter
active) is put in eval mode, generates for the held-out prompts (the first `eval.limit`) as `grpo-cli eval` does
(`generation`: greedy for one sample, the recipe's sampling for `eval.num_samples` > 1), its completions are
scored with the recipe's rewards and the eval-only ones (`heldout.score`), and it goes back to train mode. SFT runs
get the same generation metrics (eval-only rewards, lengths); reward runs get pairwise accuracy on held-out pairs.

Results: one metrics.jsonl row at the step (`eval/<name>`, the names `eval` reports, plus `eval/seconds`,
`eval/train_reward` and `eval/diverging`), the samples in eval_during/step-N.jsonl, one stderr line with the cost.
Only the main process evaluates (the others wait at the next step's synchronisation); a resumed run rebuilds the
alarm's history from metrics.jsonl. The alarm (`divergence`) compares `eval/train_reward`, the mean training
reward logged since the evaluation before, with the held-out metric: the first eval-only reward, else the
recipe's first reward.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from grpo_cli import distributed, heldout, interrupts, prompting, scoring, trainer_fields
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.divergence import PREFIX, Alarm, Point
from grpo_cli.errors import UserError
from grpo_cli.eval_stats import summarize
from grpo_cli.generation import generate, sampling_settings
from grpo_cli.output import say, warn_once
from grpo_cli.recipe import Recipe
from grpo_cli.run_files import atomic_write, read_metrics, rename_metrics

SAMPLES_DIR = "eval_during"
BATCH_SIZE = 64  # completions per generation batch and per reward call, as `grpo-cli eval`'s default


def samples_path(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / SAMPLES_DIR / f"step-{step}.jsonl"


def held_out_metric(recipe: Recipe) -> str | None:
    """The metrics.jsonl name of the metric the alarm watches: the first eval-only reward, else the recipe's first
    reward; None for runs without rewards of either kind (reward models)."""
    names = [r.name for r in (recipe.eval.rewards if recipe.eval else [])] + [r.name for r in recipe.rewards]
    return f"{PREFIX}rewards/{names[0]}" if names else None


class HeldOutEval(TrainerCallback):
    """The evaluation during training (see the module docstring); `install` puts it on a trainer."""

    def __init__(self, recipe: Recipe, output_dir: Path, logger, tokenizer, rows, rewards=None):
        section = recipe.eval
        self.recipe, self.output_dir, self.logger, self.tokenizer = (
            recipe,
            Path(output_dir),
            logger,
            tokenizer,
        )
        self.every = section.every
        self.kind = ALGORITHMS[recipe.algorithm].learns_from
        self.pairs = self.kind == "chosen/rejected pairs"
        self.rows = rows  # prepared: prompts (with their columns) or preference pairs
        self.rewards = rewards  # heldout.Rewards, for runs that generate
        self.sampling = None if self.pairs else sampling_settings(recipe, section.num_samples)
        if not self.pairs:
            chat_kwargs = trainer_fields.chat_template_kwargs(recipe)
            self.prompt_ids = prompting.tokenize_prompts(tokenizer, [r["prompt"] for r in rows], chat_kwargs)
            self.chat = prompting.uses_chat(recipe.dataset, tokenizer)
        metric = held_out_metric(recipe) if self.kind == "rewards" else None
        samples = len(rows) * section.num_samples
        self.alarm = Alarm(section.alarm_window, section.alarm_drop, metric, samples) if metric else None
        self.stop = section.stop_when_diverging
        self.model_of: Callable[[], Any] | None = None
        self.rewards_logged: list[float] = []  # training rewards logged since the last evaluation
        self.evaluated: set[int] = set()
        self.seconds = 0.0

    def install(self, trainer, model_of: Callable[[], Any]) -> None:
        """Add to `trainer` (before `callbacks.guard`, whose step end acts on a stop this asks for)."""
        self.model_of = model_of
        trainer.add_callback(self)

    # -- callbacks --

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run: the alarm's history, and the rewards logged since the last evaluation, from metrics.jsonl
        (its steps after the checkpoint are already dropped: they train again)."""
        self.rewards_logged = []
        for row in read_metrics(self.output_dir):
            if row["step"] > state.global_step:
                break
            if self._is_evaluation(row):
                self.evaluated.add(row["step"])
                self.rewards_logged = []
                if self.alarm is not None:
                    self.alarm.add(self._point(row))  # replayed: an episode under way stays quiet
                    self.alarm.trips = [t for t in self.alarm.trips if t["step"] <= state.global_step]
            if isinstance(row.get("reward"), int | float):
                self.rewards_logged.append(row["reward"])
        if state.global_step == 0 and state.is_world_process_zero:
            self.evaluated.add(0)
            self.evaluate(0, state.max_steps)  # where the run starts: the baseline of the curves

    def on_log(self, args, state, control, logs=None, **kwargs):
        reward = rename_metrics(logs or {}).get("reward")
        if isinstance(reward, int | float):
            self.rewards_logged.append(reward)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        due = step % self.every == 0 or step >= state.max_steps
        if due and step not in self.evaluated:
            self.evaluated.add(step)
            self.evaluate(step, state.max_steps)

    # -- the evaluation --

    def evaluate(self, step: int, max_steps: int) -> dict[str, Any]:
        """Evaluate the model as it is now; write the row, the samples and the line (see the module docstring)."""
        import torch

        model = self.model_of()
        was_training = model.training
        started = time.perf_counter()
        model.eval()
        try:
            with torch.no_grad():
                if self.pairs:
                    metrics, lines = self._pairs(model)
                else:
                    metrics, lines = self._generations(model, step, max_steps)
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        row = {f"{PREFIX}{name}": value for name, value in metrics.items()}
        row[f"{PREFIX}seconds"] = round(seconds, 3)
        if self.kind == "rewards":
            logged = self.rewards_logged
            row[f"{PREFIX}train_reward"] = sum(logged) / len(logged) if logged else None
        self.rewards_logged = []
        trip = self.alarm.add(self._point({"step": step, **row})) if self.alarm is not None else None
        if self.alarm is not None:
            row[f"{PREFIX}diverging"] = int(self.alarm.active)
        atomic_write(samples_path(self.output_dir, step), "".join(lines))
        self.logger.record(step, row)
        say(f"held-out eval at step {step}: {self._shown(row)} ({seconds:.1f} s)")
        if trip is not None:
            warn_once(self.alarm.message(trip))
            if self.stop:
                interrupts.stop_for(
                    f"the held-out {trip['metric']} fell while the training reward rose "
                    "(eval.stop_when_diverging)"
                )
        return row

    def _generations(self, model, step: int, max_steps: int):
        samples = generate(model, self.tokenizer, self.prompt_ids, self.sampling, BATCH_SIZE)
        state = scoring.run_state(step, max_steps)
        heldout.score(samples, self.rows, self.rewards, self.chat, BATCH_SIZE, state)
        metrics = summarize(samples, self.rewards.names, with_total=bool(self.rewards.training))
        lines = []
        for group in samples:
            for s in group:
                record = {
                    "step": step,
                    "prompt_index": s.prompt_index,
                    "sample": s.sample_index,
                    "prompt": self.rows[s.prompt_index]["prompt"],
                    "completion": s.text,
                    "completion_length": s.length,
                    "clipped": s.clipped,
                    "reward": s.total,
                    "rewards": s.scores,
                }
                lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return metrics, lines

    def _pairs(self, model):
        scored = heldout.pair_scores(model, self.tokenizer, self.rows, BATCH_SIZE)
        lines = [
            json.dumps({"pair_index": i, "chosen_score": c, "rejected_score": r}) + "\n"
            for i, (c, r) in enumerate(scored)
        ]
        return heldout.summarize_pairs(scored), lines

    def _point(self, row: dict) -> Point:
        metric = self.alarm.metric
        return Point(row["step"], row.get(f"{PREFIX}train_reward"), row.get(metric), row.get(f"{metric}/std"))

    @staticmethod
    def _is_evaluation(row: dict) -> bool:
        return f"{PREFIX}seconds" in row

    def _shown(self, row: dict) -> str:
        names = [self.alarm.metric] if self.alarm else []
        names += [f"{PREFIX}rewards/{name}" for name in (self.rewards.names if self.rewards else [])]
        names += [f"{PREFIX}reward", f"{PREFIX}pairwise_accuracy", f"{PREFIX}completion_length"]
        shown = [
            f"{n.removeprefix(PREFIX)} {row[n]:.3f}" for n in names if isinstance(row.get(n), int | float)
        ]
        return ", ".join(dict.fromkeys(shown))

    def summary(self) -> dict[str, Any]:
        """summary.json's part: how often and at what cost it evaluated, and every trip of the alarm."""
        return {
            "held_out_eval": {
                "every": self.every,
                "evaluations": len(self.evaluated),
                "seconds": round(self.seconds, 2),
                "metric": self.alarm.metric if self.alarm else None,
            },
            "divergence": list(self.alarm.trips) if self.alarm else [],
        }


def for_run(
    recipe: Recipe, output_dir: Path, logger, tokenizer, held_out, training_rewards=None, device=None
):
    """The evaluation during training of this run, or None: `eval.every` unset, or not the main process.

    `held_out`: the raw held-out rows (data.load_splits); `training_rewards`: the trainer's bound rewards, reward
    models loaded (eval-only ones are loaded here, on `device`)."""
    if recipe.eval is None or recipe.eval.every is None or not distributed.is_main_process():
        return None
    if held_out is None:  # validate says so first; a dataset whose split vanished since
        raise UserError("eval.every: the recipe has no held-out data: set dataset.eval_size")
    if recipe.eval.limit is not None:
        held_out = held_out.select(range(min(recipe.eval.limit, len(held_out))))
    if ALGORITHMS[recipe.algorithm].learns_from == "chosen/rejected pairs":
        return HeldOutEval(
            recipe,
            output_dir,
            logger,
            tokenizer,
            prompting.prepare_preferences(held_out, recipe.dataset, tokenizer),
        )
    rewards = heldout.bind_rewards(recipe, training=training_rewards or [], device=device)
    rows = list(prompting.prepare(held_out, recipe.dataset, tokenizer))
    return HeldOutEval(recipe, output_dir, logger, tokenizer, rows, rewards)
