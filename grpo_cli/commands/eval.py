"""`grpo-cli eval`: a trained model (or a base model) on the recipe's held-out prompts, scored by its rewards; or
every stage of a pipeline file, each run against the model it started from, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import LegacyOutput, Overrides, Recipe, pick_output_dir, print_table


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
            help="Also evaluate the base model on the same prompts and seeds; show the difference. "
            "Always on for a pipeline file.",
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
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace another evaluation's results in the output directory (this evaluation's own are "
            "always replaced).",
        ),
    ] = False,
    legacy_output: LegacyOutput = None,
) -> None:
    """Generate completions for the recipe's held-out prompts and score them with its rewards.

    Evaluates a training run (--adapter RUN_DIR), any saved model (--model PATH), or with neither the recipe's
    base model. Reports each reward's mean and std, pass@1 and pass@K for pass/fail rewards, completion length
    and the share cut at the length limit. Eval-only rewards go in the recipe's `eval: {rewards: [...]}`.

    The held-out prompts are split as in training: pass the run's own RUN_DIR/recipe.yaml as RECIPE to be sure
    of the same split. With --baseline, eval.json holds both models' metrics and their difference (tuned - base).
    A run of the wrong kind for the recipe (a reward-model run for a policy recipe, or the reverse) is refused;
    so is an output directory holding another evaluation's results, unless --overwrite.

    RECIPE may be a pipeline file (`stages:`, e.g. `grpo-cli eval pipeline`): every stage's run (its output_dir)
    is then evaluated in order as --adapter RUN_DIR --baseline would, each writing RUN_DIR/eval, and one table
    ends it: each stage's run against the model it started from. Exit code 2 when a stage has no finished run.
    --num-samples, --limit and --batch-size apply to every stage; the options naming one model do not.

    Examples: grpo-cli eval addition --adapter runs/addition --baseline; grpo-cli eval quickstart
    """
    import os

    from grpo_cli import pipeline
    from grpo_cli.errors import UserError
    from grpo_cli.recipe import load_recipe
    from grpo_cli.run_checks import relative_runs_note
    from grpo_cli.workflows.evaluate import evaluate_recipe

    output_dir = pick_output_dir(output_dir, legacy_output)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # A file of stages: each stage's own run against its own start (--baseline is implied), then one table.
    if pipeline.is_pipeline(recipe):
        _refuse_one_model_options(recipe, overrides, adapter, model, output_dir, overwrite)
        stages = pipeline.evaluate(
            recipe, num_samples=num_samples, limit=limit, batch_size=batch_size, show=_show, note=_note
        )
        print_table(pipeline_table(recipe, stages))
        missing = [stage for stage in stages if stage.result is None]
        if missing:
            names = ", ".join(pipeline.shown(s.recipe.path) for s in missing)
            advice = []
            untrained = [s for s in missing if s.untrained]
            if untrained:
                # From another directory, the runs may well exist: say where they were looked for first.
                elsewhere = relative_runs_note(untrained[0].recipe.path.parent)
                advice.append(elsewhere or f"`grpo-cli train {recipe}` trains what is missing")
            failed = [s for s in missing if not s.untrained]
            if failed:
                advice.append(f"see the error{'s' if len(failed) > 1 else ''} above")
            raise UserError(
                f"{len(missing)} of {len(stages)} stages not evaluated ({names}): {'; '.join(advice)}"
            )
        return
    evaluated = evaluate_recipe(
        load_recipe(recipe, overrides or []),
        adapter=adapter,
        model=model,
        baseline=baseline,
        num_samples=num_samples,
        limit=limit,
        batch_size=batch_size,
        output_dir=output_dir,
        overwrite=overwrite,
        note=_note,
    )
    _show(evaluated)


def _note(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"note: {message}", style="yellow", highlight=False)


def _show(evaluated) -> None:
    """One recipe's result: its metrics table, and where it was written."""

    print_table(metrics_table(evaluated.result))
    typer.echo(f"wrote {evaluated.eval_path} and {evaluated.samples_path}")


def _refuse_one_model_options(recipe: str, overrides, adapter, model, output_dir, overwrite=False) -> None:
    """--adapter, --model, --output-dir, --overwrite and KEY=VALUE are about one recipe's model: with a pipeline file, one line
    that says so and gives the command that evaluates one stage with them."""
    from grpo_cli import pipeline
    from grpo_cli.errors import UserError

    options = {
        "--adapter": adapter,
        "--model": model,
        "--output-dir": output_dir,
        "--overwrite": overwrite or None,
    }
    given = [flag for flag, value in options.items() if value is not None]
    given += ["KEY=VALUE overrides"] if overrides else []
    if not given:
        return
    last = pipeline.stage_recipes(recipe)[-1]
    if model is not None:
        one = [f"--model {model}"]
    else:
        one = [f"--adapter {adapter if adapter is not None else last.output_dir}", "--baseline"]
    one += [f"--output-dir {output_dir}"] if output_dir is not None else []
    one += ["--overwrite"] if overwrite else []
    one += overrides or []
    raise UserError(
        f"eval of a pipeline file evaluates each stage's own run; {' and '.join(given)} "
        f"{'apply' if len(given) > 1 or overrides else 'applies'} to one recipe: "
        f"grpo-cli eval {pipeline.shown(last.path)} {' '.join(one)}"
    )


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


def pipeline_table(name: str, stages):
    """One row per stage (a reward stage adds its margin): the stage's headline metric for its run, for the model
    it started from, and the difference; a stage without a result says why."""
    from rich.table import Table
    from rich.text import Text

    from grpo_cli import pipeline

    table = Table(
        title=f"{name}: each stage's run vs the model it started from (held-out)", title_justify="left"
    )
    for column in ("stage", "run", "metric", "result", "baseline", "delta", "started from"):
        if column in ("result", "baseline", "delta"):
            table.add_column(column, justify="right", no_wrap=True)
        else:  # paths and names fold in a narrow terminal rather than lose their ends
            table.add_column(column, overflow="fold")
    for stage in stages:
        recipe = stage.recipe
        first = [pipeline.shown(recipe.path), recipe.output_dir]
        start = started_from(recipe)
        if stage.result is None:
            table.add_row(*first, Text(stage.problem, style="red"), *[_cell(None, False)] * 3, start)
            continue
        metrics = stage.result.metrics
        shown = headline(stage.result) or [(None, Text("no rewards (set eval.rewards)", style="dim"))]
        for i, (key, label) in enumerate(shown):
            table.add_row(
                *(first if i == 0 else ["", ""]),
                label,
                _cell(metrics["tuned"].get(key), signed=False),
                _cell(metrics["base"].get(key), signed=False),
                _cell(metrics["delta"].get(key), signed=True),
                start if i == 0 else "",
            )
    return table


def headline(result) -> list[tuple[str, str]]:
    """(metric, label) of what a pipeline's table shows for a stage. A reward run: pairwise accuracy, then the
    mean margin. A generation run: its task metric, the mean of its first eval-only reward (`eval.rewards`, what
    the stage was not trained on, so it shows reward hacking), else of its first training reward."""
    settings = result.settings
    if settings.get("kind") == "pairs":
        return [("pairwise_accuracy", "pairwise_accuracy"), ("margin", "margin")]
    if settings["eval_rewards"]:
        name = settings["eval_rewards"][0]
        return [(f"rewards/{name}", f"rewards/{name} (eval only)")]
    if settings["rewards"]:
        name = settings["rewards"][0]["name"]
        return [(f"rewards/{name}", f"rewards/{name}")]
    return []


def started_from(recipe) -> str:
    """The model a stage's run started from (what --baseline evaluates), in a few words, from its recipe."""
    from grpo_cli import pipeline
    from grpo_cli.algorithms.table import ALGORITHMS
    from grpo_cli.run_files import run_kind

    spec = recipe.model
    if spec.run is not None:
        start = pipeline.shown(Path(spec.run))
    elif spec.from_config is not None:
        start = "untrained (from_config)"
    else:
        start = spec.name_or_path
    if ALGORITHMS[recipe.algorithm].makes != "reward model" or spec.from_config is not None:
        return start  # a model built from a config is untrained, head and all
    # A reward stage puts a fresh score head on a policy; a reward run's model, or a one-label reward model, it
    # continues as it is (its head loaded).
    if spec.run is not None:
        head_loaded = run_kind(Path(spec.run)) == "reward model"
    else:
        head_loaded = _one_label_classifier(spec.name_or_path, spec.revision)
    return start if head_loaded else f"{start}, fresh score head"


def _one_label_classifier(name_or_path: str, revision: str | None) -> bool:
    """Whether the config.json of a local directory (or of a Hub model in the local cache) is a one-label sequence
    classifier's, whose score head loads as it is; False when it cannot be read without the network."""
    import json

    config = Path(name_or_path) / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        from grpo_cli.model_sources import HUB_ID

        if not HUB_ID.match(name_or_path):
            return False

        cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
        if not isinstance(cached, str):
            return False
        config = Path(cached)
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = settings.get("architectures") or []
    labels = settings.get("num_labels", len(settings.get("id2label") or {}) or 2)
    return any(str(a).endswith("ForSequenceClassification") for a in architectures) and labels == 1
