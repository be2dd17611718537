"""Evaluate one recipe's model on its held-out data and write the result: `grpo-cli eval RECIPE` and every stage of
`grpo-cli eval PIPELINE` come here.

A policy generates and its completions are scored (`evaluate_generations`); a reward model scores held-out
preference pairs (`evaluate_pairs`). Either way the result is an `EvalResult`, written as eval.json and
eval_samples.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.recipe import Recipe
from grpo_cli.workflows import evaluate_generations, evaluate_pairs
from grpo_cli.workflows.evaluate_generations import EvalResult


@dataclass
class Evaluated:
    result: EvalResult
    eval_path: Path  # eval.json
    samples_path: Path  # eval_samples.jsonl


def evaluate_recipe(
    recipe: Recipe,
    *,
    adapter: Path | None = None,
    model: Path | None = None,
    baseline: bool = False,
    num_samples: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    output_dir: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> Evaluated:
    """Evaluate the run in `adapter` (or the saved `model`, else the recipe's base model; with `baseline`, the model
    it started from too) and write the result to `output_dir`: by default RUN_DIR/eval with `adapter`, else
    runs/eval-<recipe name>. `note(message)` is told what the reader of the result should know."""
    if ALGORITHMS[recipe.algorithm].makes == "reward model":  # scored pairs, not generations
        result = evaluate_pairs.run(
            recipe, adapter=adapter, model=model, baseline=baseline, limit=limit, batch_size=batch_size
        )
    else:
        result = evaluate_generations.run(
            recipe,
            adapter=adapter,
            model=model,
            baseline=baseline,
            num_samples=num_samples,
            limit=limit,
            batch_size=batch_size,
            note=note,
        )
    if output_dir is None:
        output_dir = adapter / "eval" if adapter is not None else Path("runs") / f"eval-{recipe.path.stem}"
    eval_path, samples_path = result.write(output_dir)
    return Evaluated(result, eval_path, samples_path)
