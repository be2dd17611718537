"""Evaluating a policy from start to finish: held-out prompts -> K completions each from the tuned model (and, with
`--baseline`, its base) -> the recipe's rewards and any eval-only ones -> metrics, eval.json and eval_samples.jsonl.

The parts live elsewhere: which models a run directory holds (`model_sources.resolve_models`), loading and generating
(`generation`), the metrics (`metrics`). This module binds the rewards, scores, and writes the result.

What a training run's output directory must hold to be evaluated (GRPO and PPO runs share this layout):
    adapter_config.json + adapter weights   a peft adapter, loaded on its base and merged for generation speed
    config.json + weights                   or a fully fine-tuned model (loadable with AutoModelForCausalLM)
    tokenizer files                         the tokenizer (else the base's)
    base_model/                             for models built from a config: the initial weights and tokenizer
    recipe.yaml                             the resolved training recipe: the base when there is no base_model/
    summary.json                            optional; copied into eval.json so a result names what produced it
A `checkpoint-N/` inside a run works too: recipe.yaml and base_model/ are then looked up in the run directory.

Every completion, the base model's included, is tokenized and decoded with ONE tokenizer (the evaluated model's),
so both models see exactly the same prompt tokens; `generation` says how sampling departs from training's.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli import (
    models,
    prompting,
    scoring,
    tool_binding,
    tool_calls,
    tool_loop,
    trainer_fields,
)
from grpo_cli.devices import device_name
from grpo_cli.errors import ConfigError, UserError
from grpo_cli.eval_stats import difference, summarize
from grpo_cli.generation import Sample, generate, sampling_settings
from grpo_cli.heldout import Rewards, bind_rewards, held_out_rows, score  # noqa: F401  (eval's names too)
from grpo_cli.model_sources import resolve_models
from grpo_cli.models import load_source
from grpo_cli.output import phase
from grpo_cli.recipe import EvalSection, Recipe
from grpo_cli.run_files import atomic_write_all, read_recipe


def evaluated_state(source, recipe: Recipe):
    """The `trainer_state` eval gives rewards scoring `source` (None: the recipe's base model).

    A checkpoint: its trainer_state.json. A run directory: `global_step` the run's steps (summary.json, else its
    last checkpoint's step) and `max_steps` its last checkpoint's (else its steps). No model, or a model that is
    not a run's: the start of training, `global_step` 0 and `max_steps` the recipe's `trainer.max_steps` (0 when
    it sets none). `run` gives the base model `global_step` 0 and the evaluated run's `max_steps`.
    """
    from grpo_cli.run_dir import checkpoint_step, last_checkpoint
    from grpo_cli.run_files import TRAINER_STATE_FILE, read_summary, read_trainer_state

    planned = trainer_fields.value(recipe, "max_steps")
    start = scoring.run_state(0, planned if isinstance(planned, int) and planned > 0 else 0)
    path = getattr(source, "path", None)
    if path is None or source.run_dir is None:
        return start
    if (path / TRAINER_STATE_FILE).is_file():
        return scoring.run_state(**read_trainer_state(path))
    checkpoint = last_checkpoint(path)
    saved = (read_trainer_state(checkpoint) if checkpoint else None) or {}
    steps = (read_summary(source.run_dir) or {}).get("steps")
    if not isinstance(steps, int):
        steps = checkpoint_step(checkpoint) if checkpoint else 0
    return scoring.run_state(**{**saved, "global_step": steps, "max_steps": saved.get("max_steps", steps)})


# ---- the whole evaluation ----


@dataclass
class EvalResult:
    settings: dict[str, Any]
    models: dict[str, dict]  # "tuned" / "base" -> identity
    metrics: dict[str, dict]  # "tuned" / "base" / "delta" -> metric -> value
    samples: dict[str, list[list[Sample]]]  # "tuned" / "base" -> [prompt][sample]
    rows: list[dict]
    timing: dict[str, dict]
    notes: list[str]
    # "tuned" / "base" -> (prompt_index, sample_index) -> what rewards passed to `log_extra` for that sample
    extra: dict[str, dict[tuple[int, int], dict]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "models": self.models,
            "metrics": self.metrics,
            "timing": self.timing,
            "notes": self.notes,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def sample_lines(self) -> str:
        lines = []
        for role, groups in self.samples.items():
            for group in groups:
                for s in group:
                    row = self.rows[s.prompt_index]
                    record = {
                        "model": role,
                        "prompt_index": s.prompt_index,
                        "sample": s.sample_index,
                        "prompt": row["prompt"] if s.prompt is None else s.prompt,
                        "completion": s.text if s.messages is None else s.messages,
                        "completion_length": s.length,
                        "clipped": s.clipped,
                        "reward": s.total,
                        "rewards": s.scores,
                        "columns": {k: v for k, v in row.items() if k != "prompt"},
                    }
                    if s.messages is not None:
                        record.update(tool_calls=s.tool_calls, tool_failures=s.tool_failures, turns=s.turns)
                    logged = self.extra.get(role, {}).get((s.prompt_index, s.sample_index))
                    if logged:
                        record["extra"] = logged
                    lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return "".join(lines)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """eval_samples.jsonl and eval.json: both new, or (interrupted, a disk full) both as they were."""
        samples_path, eval_path = directory / "eval_samples.jsonl", directory / "eval.json"
        report = json.dumps(self.to_json(), indent=2, ensure_ascii=False, default=str) + "\n"
        atomic_write_all({samples_path: self.sample_lines(), eval_path: report})
        return eval_path, samples_path


def run(
    recipe: Recipe,
    *,
    adapter: Path | None = None,
    model: Path | None = None,
    baseline: bool = False,
    num_samples: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    note: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate the tuned model (or, with neither `adapter` nor `model`, the recipe's base) on held-out prompts."""
    section = recipe.eval or EvalSection()
    num_samples = num_samples or section.num_samples
    limit = limit if limit is not None else section.limit
    if num_samples < 1 or batch_size < 1 or (limit is not None and limit < 1):
        raise UserError("--num-samples, --batch-size and --limit must be at least 1")
    notes: list[str] = []

    def tell(message: str) -> None:
        notes.append(message)
        if note is not None:
            note(message)

    # Tools and environments resolved with the rewards, before a model loads; run by the training loop's rules.
    agent = tool_binding.bind_all(recipe) if recipe.tools or recipe.environment else None
    # Cheap checks first: the models' whereabouts, the rewards, the data; then load.
    tuned, base = resolve_models(recipe, adapter, model)
    if baseline and tuned is None:
        raise UserError(
            "--baseline compares a tuned model with its base: also give --adapter RUN_DIR or --model PATH"
        )
    rewards = bind_rewards(recipe)
    if tuned is not None and tuned.run_dir is not None:
        _check_same_split(recipe, tuned.run_dir, tell)
    sampling = sampling_settings(recipe, num_samples)
    raw_rows = held_out_rows(recipe, limit)
    final = evaluated_state(tuned, recipe)  # the trainer_state rewards get

    with phase("importing torch and transformers"):
        models.quiet_progress_bars()
    roles = [("tuned", tuned)] if tuned is not None else []
    if baseline or tuned is None:
        roles.append(("base", base))
    samples, timing, identities, extra, logged = {}, {}, {}, {}, {}
    tokenizer = rows = prompt_ids = chat = None
    for role, source in roles:
        with warnings.catch_warnings(), phase(f"loading the {role} model ({source.describe()})"):
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside peft's merge
            loaded, own_tokenizer = load_source(source, recipe)
        if tokenizer is None:  # the first model's tokenizer serves both (see the module docstring)
            tokenizer = own_tokenizer
            problems = tool_calls.prepare_tokenizer(tokenizer, recipe.tool_template) if agent else []
            if problems:
                raise ConfigError(recipe.path.name if recipe.path else "recipe", problems)
            with phase(f"preparing {len(raw_rows)} prompts"):
                prepared = prompting.prepare(raw_rows, recipe.dataset, tokenizer)
                rows = list(prepared)
                chat = prompting.uses_chat(recipe.dataset, tokenizer)
                template_kwargs = trainer_fields.chat_template_kwargs(recipe)
                prompt_ids = prompting.tokenize_prompts(
                    tokenizer, [r["prompt"] for r in rows], template_kwargs
                )
        started = time.perf_counter()
        with _progress(f"generating ({role})", len(rows) * num_samples, progress) as advance:
            if agent is None:
                samples[role] = generate(loaded, tokenizer, prompt_ids, sampling, batch_size, advance)
            else:  # each model its own environments and tally
                samples[role] = tool_loop.rollouts(
                    loaded,
                    tokenizer,
                    rows,
                    tool_calls.toolbox(agent),
                    sampling,
                    max_iterations=trainer_fields.value(recipe, "max_tool_calling_iterations"),
                    chat_template_kwargs=template_kwargs,
                    batch_size=batch_size,
                    on_batch=advance,
                )
        seconds = time.perf_counter() - started
        count = len(rows) * num_samples
        timing[role] = {"generation_s": round(seconds, 3), "completions_per_s": round(count / seconds, 2)}
        identities[role] = source.identity()
        del loaded
        gc.collect()
        log = scoring.RewardLog()
        state = final if role == "tuned" else scoring.run_state(0, final.max_steps)  # base: the run's start
        extra[role] = score(samples[role], rows, rewards, chat, batch_size, state, log)
        logged[role] = log.take_metrics()

    env_names = sorted({n for groups in samples.values() for g in groups for s in g for n in s.env_rewards})
    with_total = bool(rewards.training or env_names)
    metrics = {
        role: summarize(groups, rewards.names + env_names, with_total=with_total)
        for role, groups in samples.items()
    }
    if agent is not None:  # tool calls per completion, failed calls per call, assistant turns
        for role, groups in samples.items():
            metrics[role].update(tool_loop.tool_metrics(groups))
    for role, values in logged.items():  # what rewards passed to log_metric, averaged; never over eval's own
        metrics[role].update({name: value for name, value in values.items() if name not in metrics[role]})
    if "tuned" in metrics and "base" in metrics:
        metrics["delta"] = difference(metrics["tuned"], metrics["base"])
    settings = {
        "recipe": str(recipe.path) if recipe.path else None,
        "algorithm": recipe.algorithm,
        "held_out": _held_out_spec(recipe),
        "num_prompts": len(rows),
        "num_samples": num_samples,
        "limit": limit,
        "batch_size": batch_size,
        "seed": recipe.seed,
        "chat": chat,
        **sampling.describe(),
        "rewards": [{"name": r.name, "weight": r.entry.weight} for r in rewards.training],
        "eval_rewards": [r.name for r in rewards.eval_only],
        **(_tool_settings(recipe, agent) if agent is not None else {}),
        "trainer_state": {"global_step": final.global_step, "max_steps": final.max_steps},  # rewards get
        "device": device_name(),
    }
    return EvalResult(settings, identities, metrics, samples, rows, timing, notes, extra)


def _tool_settings(recipe: Recipe, agent) -> dict[str, Any]:
    return {
        "tools": [t.name for t in agent.tools] + [m for e in agent.environments for m in e.methods],
        "environments": [e.entry.name for e in agent.environments],
        "max_tool_calling_iterations": trainer_fields.value(recipe, "max_tool_calling_iterations"),
    }


def _held_out_spec(recipe: Recipe) -> dict[str, Any]:
    spec = recipe.dataset
    return {
        k: getattr(spec, k) for k in ("eval_split", "eval_ratio", "eval_size") if getattr(spec, k) is not None
    }


def _check_same_split(recipe: Recipe, run_dir: Path, tell: Callable[[str], None]) -> None:
    """The held-out rows are split with the recipe's seed: a different dataset or seed than the run's may leak
    training rows into the evaluation."""
    trained = read_recipe(run_dir)
    if trained is None:
        return
    mine = recipe.model_dump(mode="json")
    if trained.get("dataset") != mine["dataset"] or trained.get("seed") != mine["seed"]:
        tell(
            f"the recipe's dataset or seed differs from {run_dir / 'recipe.yaml'}: "
            "the held-out prompts may include rows the model was trained on"
        )


@contextlib.contextmanager
def _progress(description: str, total: int, show: bool):
    """A rich progress bar on stderr over the completions generated, advanced once per batch."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("completions"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
