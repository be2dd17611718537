"""`grpo-cli eval`: a trained model (or a base model) on the recipe's held-out prompts, scored by its rewards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import LegacyOutput, Overrides, Recipe, pick_output_dir


def evaluate(
    recipe: Recipe,
    overrides: Overrides = None,
    adapter: Annotated[
        Path | None,
        typer.Option(
            "--adapter",
            "-a",
            metavar="RUN_DIR",
            help="A training run's output directory (adapter or full model).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", metavar="PATH", help="Any saved model directory.", show_default=False),
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Also evaluate the base model on the same prompts and seeds; show the difference.",
        ),
    ] = False,
    num_samples: Annotated[
        int | None,
        typer.Option(
            "--num-samples",
            "-k",
            metavar="K",
            min=1,
            help="Completions per prompt: 1 decodes greedily; more sample with the recipe's trainer settings "
            "and give pass@K. Default: eval.num_samples, else 1.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            min=1,
            help="Evaluate the first N held-out prompts. Default: eval.limit, else all.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Completions generated per batch.")
    ] = 64,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            metavar="DIR",
            help="Directory for eval.json and eval_samples.jsonl. Default: RUN_DIR/eval with --adapter, "
            "else runs/eval-<recipe name>.",
            show_default=False,
        ),
    ] = None,
    legacy_output: LegacyOutput = None,
) -> None:
    """Generate completions for the recipe's held-out prompts and score them with its rewards.

    Evaluates a training run (--adapter RUN_DIR), any saved model (--model PATH), or with neither the recipe's
    base model. Reports each reward's mean and std, pass@1 and pass@K for pass/fail rewards, completion length
    and the share cut at the length limit. Eval-only rewards go in the recipe's `eval: {rewards: [...]}`.

    The held-out prompts are split as in training: pass the run's own RUN_DIR/recipe.yaml as RECIPE to be sure
    of the same split. With --baseline, eval.json holds both models' metrics and their difference (tuned - base).

    Example: grpo-cli eval quickstart --adapter runs/quickstart --baseline
    """
    import os

    from rich.console import Console

    from grpo_cli import evaluate as evaluation
    from grpo_cli.recipe import load_recipe

    output_dir = pick_output_dir(output_dir, legacy_output)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    loaded = load_recipe(recipe, overrides or [])
    err_console = Console(stderr=True)
    if loaded.algorithm == "reward":  # a reward model: scored pairs, not generations
        from grpo_cli import evaluate_pairs

        result = evaluate_pairs.run(
            loaded, adapter=adapter, model=model, baseline=baseline, limit=limit, batch_size=batch_size
        )
    else:
        result = evaluation.run(
            loaded,
            adapter=adapter,
            model=model,
            baseline=baseline,
            num_samples=num_samples,
            limit=limit,
            batch_size=batch_size,
            note=lambda message: err_console.print(f"note: {message}", style="yellow", highlight=False),
        )
    if output_dir is None:
        output_dir = adapter / "eval" if adapter is not None else Path("runs") / f"eval-{loaded.path.stem}"
    eval_path, samples_path = result.write(output_dir)
    Console().print(metrics_table(result))
    typer.echo(f"wrote {eval_path} and {samples_path}")


def metrics_table(result):
    """Rows: metrics; columns: tuned, base, delta (those evaluated)."""
    from rich.table import Table

    settings = result.settings
    if settings.get("kind") == "pairs":
        title = f"{settings['num_prompts']} held-out preference pairs (chosen vs rejected)"
    else:
        how = (
            "greedy"
            if settings["decoding"] == "greedy"
            else f"sampled, temperature {settings['temperature']:g}"
        )
        title = f"{settings['num_prompts']} held-out prompts x {settings['num_samples']} ({how})"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    roles = [role for role in ("tuned", "base", "delta") if role in result.metrics]
    for role in roles:
        table.add_column(role, justify="right")
    eval_only = {f"rewards/{name}" for name in settings["eval_rewards"]}
    for key in next(iter(result.metrics.values())):
        label = key + (" (eval only)" if key.split("/pass@")[0].removesuffix("/std") in eval_only else "")
        cells = [_cell(result.metrics[role].get(key), signed=role == "delta") for role in roles]
        table.add_row(label, *cells)
    return table


def _cell(value, signed: bool):
    from rich.text import Text

    if value is None:
        return Text("-", style="dim")
    return Text(f"{value:+.3f}" if signed else f"{value:.3f}")
