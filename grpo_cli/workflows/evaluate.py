"""Evaluate one recipe's model on its held-out data and write the result: `grpo-cli eval RECIPE` and every stage of
`grpo-cli eval PIPELINE` come here.

A policy generates and its completions are scored (`evaluate_generations`); a reward model scores held-out
preference pairs (`evaluate_pairs`). Either way the result is an `EvalResult`, written as eval.json and
eval_samples.jsonl.

Checked before anything loads: the run is of the kind the recipe evaluates (a policy recipe takes a policy run, a
reward recipe a reward-model run), and the output directory holds no other evaluation's results (another kind,
recipe or model): those are replaced only when asked (`overwrite`); this evaluation's own are replaced, saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.errors import UserError
from grpo_cli.model_sources import run_root
from grpo_cli.output import say
from grpo_cli.recipe import Recipe
from grpo_cli.run_files import run_algorithm, run_kind
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
    overwrite: bool = False,
    note: Callable[[str], None] | None = None,
) -> Evaluated:
    """Evaluate the run in `adapter` (or the saved `model`, else the recipe's base model; with `baseline`, the model
    it started from too) and write the result to `output_dir`: by default RUN_DIR/eval with `adapter`, else
    runs/eval-<recipe name>; another evaluation's results there only with `overwrite`. `note(message)` is told
    what the reader of the result should know."""
    makes = ALGORITHMS[recipe.algorithm].makes
    if adapter is not None:
        refuse_wrong_kind(recipe, adapter)
    if output_dir is None:
        output_dir = adapter / "eval" if adapter is not None else Path("runs") / f"eval-{recipe.path.stem}"
    tuned = adapter if adapter is not None else model
    replacing = previous_evaluation(
        output_dir, (makes, recipe.path, tuned.resolve() if tuned else None), overwrite=overwrite
    )
    if makes == "reward model":  # scored pairs, not generations
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
    if replacing:
        (note or say)(replacing)
    eval_path, samples_path = result.write(output_dir)
    return Evaluated(result, eval_path, samples_path)


def refuse_wrong_kind(recipe: Recipe, adapter: Path) -> None:
    """One line when the run in `adapter` made another kind of model than the recipe evaluates: a policy recipe
    would generate from a reward model's random LM head; a reward recipe would score with a policy's new head."""
    run = run_root(adapter)
    made, wanted = run_kind(run), ALGORITHMS[recipe.algorithm].makes
    if made is None or made == wanted:
        return
    what = (
        "a reward-model run" if made == "reward model" else f"a {run_algorithm(run).upper()} run (a policy)"
    )
    raise UserError(
        f"--adapter {adapter} is {what}, but {recipe.path.name} ({recipe.algorithm}) evaluates a {wanted}; "
        f"evaluate the run with its own recipe: grpo-cli eval {run / 'recipe.yaml'} --adapter {adapter}"
    )


def previous_evaluation(output_dir: Path, this: tuple, *, overwrite: bool) -> str | None:
    """What to say when eval.json in `output_dir` is replaced (None: there is none). Refuses, unless `overwrite`,
    when it holds another evaluation (another kind, or another model): `this` is (kind, recipe path, evaluated
    model path or None)."""
    path = output_dir / "eval.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        settings, tuned = saved["settings"], saved["models"].get("tuned")
        kind = "reward model" if settings.get("kind") == "pairs" else "policy"
        before = (kind, _resolved(settings.get("recipe")), _resolved(tuned and tuned.get("path")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        before = None  # unreadable: not known to be this evaluation's
    this = (this[0], _resolved(this[1]), _resolved(this[2]))
    # The same model evaluated as the same kind is this evaluation again, whichever file holds its recipe (a
    # pipeline's stage file, or the run's own recipe.yaml); its previous results give way, and that is said.
    if before is not None and (before[0], before[2]) == (this[0], this[2]):
        with_recipe = f", measured with {before[1]}" if before[1] != this[1] else ""
        return (
            f"replacing this evaluation's previous results in {path} "
            f"({saved.get('created_at', 'undated')}{with_recipe})"
        )
    what = (
        "unreadable results"
        if before is None
        else f"the results of another evaluation ({_difference(before, this)})"
    )
    if not overwrite:
        raise UserError(
            f"{path} holds {what}; keep both with --output-dir DIR, or replace them with --overwrite"
        )
    return f"--overwrite: replacing {what} in {path}"


def _resolved(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def _difference(before: tuple, this: tuple) -> str:
    kind, recipe, model = before
    if kind != this[0]:
        return f"of a {kind}"
    if recipe != this[1]:
        return f"by the recipe {recipe}"
    return f"of the model {model}" if model else "of the recipe's base model"
