"""`grpo-cli eval` for reward-model runs: held-out preference pairs -> how often the model scores `chosen` above
`rejected` (pairwise accuracy) and by how much (mean margin), for the trained model and, with `--baseline`, the
model it started from (its fresh score head: about 0.5).

Pairs are read as the reward run trained on them and as GRPO and PPO score completions
(`reward_models.tokenize_pairs`): prompt + answer, no special tokens, the score at the last real token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from grpo_cli import devices, models, prompting
from grpo_cli.errors import UserError
from grpo_cli.heldout import held_out_rows, pair_scores, summarize_pairs
from grpo_cli.model_sources import run_root
from grpo_cli.recipe import Recipe
from grpo_cli.run_files import read_summary
from grpo_cli.workflows.evaluate_generations import EvalResult


class PairResult(EvalResult):
    """An EvalResult whose samples are preference pairs with both scores."""

    def sample_lines(self) -> str:
        lines = []
        for role, scored in self.samples.items():
            for i, (chosen, rejected) in enumerate(scored):
                row = self.rows[i]
                record = {
                    "model": role,
                    "pair_index": i,
                    **row,
                    "chosen_score": chosen,
                    "rejected_score": rejected,
                }
                lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return "".join(lines)


def _base_model(recipe: Recipe, run_dir: Path | None):
    """The reward model a run started from: its base_model/ (saved initial weights), else the recipe's model."""
    if run_dir is not None and (run_dir / "base_model" / "config.json").is_file():
        trust = recipe.model.trust_remote_code
        return models.load_reward_model(
            run_dir / "base_model", devices.torch_dtype(recipe.model.dtype), trust_remote_code=trust
        ), str(run_dir / "base_model")
    return models.load_reward_model_for_training(
        recipe.model, recipe.seed
    ), "the recipe's model (fresh score head)"


def run(
    recipe: Recipe,
    *,
    adapter: Path | None = None,
    model: Path | None = None,
    baseline: bool = False,
    limit: int | None = None,
    batch_size: int = 64,
) -> PairResult:
    """Evaluate a reward run (`adapter`), a saved reward model (`model`), or with neither the recipe's model."""
    if adapter is not None and model is not None:
        raise UserError("--adapter and --model both name a model to evaluate: give one")
    tuned_path = adapter if adapter is not None else model
    if tuned_path is not None and not tuned_path.is_dir():
        raise UserError(f"{tuned_path}: no such directory; give a reward run's output directory")
    if baseline and tuned_path is None:
        raise UserError("--baseline compares a trained model with its start: also give --adapter RUN_DIR")
    limit = limit if limit is not None else (recipe.eval.limit if recipe.eval else None)
    raw = held_out_rows(recipe, limit)
    run_dir = run_root(adapter) if adapter is not None else None
    dtype = devices.torch_dtype(recipe.model.dtype)
    roles: list[tuple[str, Any]] = []
    if tuned_path is not None:
        roles.append(
            (
                "tuned",
                lambda: (
                    models.load_reward_model(
                        tuned_path, dtype, trust_remote_code=recipe.model.trust_remote_code
                    ),
                    str(tuned_path.resolve()),
                ),
            )
        )
    if baseline or tuned_path is None:
        roles.append(("base", lambda: _base_model(recipe, run_dir)))
    samples, metrics, identities, timing = {}, {}, {}, {}
    rows = None
    for role, loader in roles:
        (loaded, tokenizer), where = loader()
        if rows is None:
            rows = prompting.prepare_preferences(raw, recipe.dataset, tokenizer)
        started = time.perf_counter()
        samples[role] = pair_scores(loaded, tokenizer, rows, batch_size)
        timing[role] = {"scoring_s": round(time.perf_counter() - started, 3)}
        metrics[role] = summarize_pairs(samples[role])
        identities[role] = {"path": where, **({"run_summary": read_summary(run_dir)} if run_dir else {})}
    if "tuned" in metrics and "base" in metrics:
        metrics["delta"] = {k: metrics["tuned"][k] - metrics["base"][k] for k in metrics["tuned"]}
    settings = {
        "recipe": str(recipe.path) if recipe.path else None,
        "algorithm": "reward",
        "kind": "pairs",
        "num_prompts": len(rows),
        "limit": limit,
        "batch_size": batch_size,
        "seed": recipe.seed,
        "eval_rewards": [],
    }
    return PairResult(settings, identities, metrics, samples, rows.to_list(), timing, [])
