"""Pipelines: one YAML file that lists stage recipes (`stages:`), trained in order by one `grpo-cli train`.

    # pipeline.yaml
    stages:                 # recipe files, relative to this file (or shipped recipe names)
      - pipeline/sft.yaml   # writes runs/pipeline-sft
      - pipeline/reward.yaml
      - pipeline/ppo.yaml   # model: {run: runs/pipeline-sft}, rewards: [{name: model:runs/pipeline-reward}]

Why a file of stages rather than `train a.yaml b.yaml`: the chain is something to ship, version and validate as
one thing; `validate` checks every stage with the runs that earlier stages will write counted as present (a
stage's `model.run` or `model:` reward naming an earlier stage's `output_dir`), and `train` skips the stages whose
run is already finished (summary.json written) with the recipe it has now (it stops when one changed since),
resumes one that was interrupted at a checkpoint, and runs the rest.
`eval` evaluates every stage's run against the model it started from; `report` draws them all in one report.
Each stage is an ordinary recipe: it trains, evaluates and reports on its own as well.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_cli._paths import RECIPES_DIR
from grpo_cli.errors import ConfigError, UserError
from grpo_cli.output import say
from grpo_cli.recipe_files import find_recipe, load_data, load_yaml, read_text, shipped_recipes

if TYPE_CHECKING:
    from grpo_cli.recipe import Recipe
    from grpo_cli.workflows.evaluate import Evaluated
    from grpo_cli.workflows.evaluate_generations import EvalResult

KEY = "stages"
MAX_STAGES = 50  # a chain longer than any post-training recipe; each stage is validated (and trained) in turn


def is_pipeline(name_or_path: str) -> bool:
    """Whether a recipe argument names a pipeline file (a mapping with `stages:`) rather than a recipe."""
    try:
        path = find_recipe(name_or_path)
        # A top-level `stages:` line first: a recipe is not parsed twice (a huge one costs seconds to parse).
        if not re.search(rf"^{KEY}\s*:", read_text(path), re.MULTILINE):
            return False
        data = load_yaml(path)
    except UserError:
        return False  # the recipe path reports it
    return isinstance(data, dict) and KEY in data


def stage_paths(path: Path) -> list[Path]:
    """The stage recipe files of the pipeline file at `path`, each found relative to it (or by shipped name)."""
    data = load_yaml(path)
    extra = sorted(str(k) for k in data if k != KEY)
    if extra:
        raise UserError(
            f"{path.name}: a pipeline file holds only `stages:` (a list of recipes), not {', '.join(extra)}"
        )
    stages = data[KEY]
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) and s for s in stages):
        raise UserError(f"{path.name}: stages must be a list of recipe files, e.g. [sft.yaml, grpo.yaml]")
    if len(stages) > MAX_STAGES:
        raise UserError(f"{path.name}: {len(stages)} stages; a pipeline has at most {MAX_STAGES}")
    found = []
    for stage in stages:
        candidate = path.parent / stage
        if not candidate.is_file() and Path(stage).stem in shipped_recipes() and "/" not in stage:
            candidate = shipped_recipes()[Path(stage).stem]
        if not candidate.is_file():
            raise UserError(f"{path.name}: stage {stage!r} not found (looked for {candidate})")
        if candidate.resolve() in found:  # it would train into its own output_dir twice
            raise UserError(f"{path.name}: stage {stage!r} is listed twice; list each stage once")
        found.append(candidate.resolve())
    return found


def validate(name_or_path: str, overrides: list[str] | None = None) -> list[tuple[Path, Any]]:
    """Check every stage as `validate` checks a recipe, the runs of earlier stages counted as present;
    one ConfigError with every problem (each naming its stage). Returns [(stage path, recipe)]."""
    from grpo_cli import validation
    from grpo_cli.recipe import check_schema, finish

    if overrides:
        raise UserError(
            "a pipeline takes no KEY=VALUE overrides: edit its stage recipes, or train a stage on its own"
        )
    path = find_recipe(name_or_path)
    planned: dict[str, str] = {}  # resolved output_dir -> algorithm, of the stages so far
    problems, stages = [], []
    for stage in stage_paths(path):
        stage_path, merged = load_data(stage)
        recipe, found, broken = check_schema(merged)
        if "*" not in broken:
            found += validation.check(recipe, broken=broken, planned=planned, recipe_dir=stage_path.parent)
        problems += [f"{stage.name}: {p}" for p in dict.fromkeys(found)]
        recipe = finish(recipe, stage_path)
        out = str(Path(recipe.output_dir).expanduser().resolve())
        if out in planned:
            problems.append(
                f"{stage.name}: output_dir {recipe.output_dir} is another stage's too; give each its own"
            )
        planned[out] = recipe.algorithm
        stages.append((stage_path, recipe))
    if problems:
        raise ConfigError(path.name, problems)
    return stages


def train(
    name_or_path: str,
    overrides: list[str] | None,
    *,
    overwrite: bool,
    num_processes: int | None,
    show_recipe: Callable[[Recipe], None] | None = None,
) -> Iterator[dict]:
    """Train the stages in order: a finished run is skipped (unless `overwrite`; a UserError before anything
    trains when its stage's recipe changed since), an interrupted one with a checkpoint resumed. Yields one mapping of facts per stage as it ends (what happened, wall time, `trained`);
    `show_recipe` as for `workflows.train.train_recipe`."""
    from grpo_cli.run_dir import holds_run, last_checkpoint
    from grpo_cli.run_files import read_summary
    from grpo_cli.workflows.train import train_recipe

    stages = validate(name_or_path, overrides)
    if not overwrite:
        _refuse_changed_stages(name_or_path, stages, num_processes)
    for number, (stage_path, recipe) in enumerate(stages, 1):
        out = Path(recipe.output_dir)
        label = f"stage {number}/{len(stages)} ({recipe.algorithm}, {stage_path.name} -> {out})"
        if not overwrite and read_summary(out) is not None:
            say(f"{label}: finished before; skipped")
            yield {"stage": stage_path.name, "output_dir": str(out), "skipped": True}
            continue
        resume = not overwrite and holds_run(out) and last_checkpoint(out) is not None
        say(f"{label}: {'resuming' if resume else 'training'}")
        started = time.monotonic()
        trained = train_recipe(
            str(stage_path),
            overwrite=overwrite and holds_run(out),
            resume=resume,
            num_processes=num_processes,
            in_pipeline=True,
            show_recipe=show_recipe,
        )
        yield {
            "stage": stage_path.name,
            "output_dir": str(out),
            "wall_time_s": round(time.monotonic() - started, 1),
            "trained": trained,
        }


# What a stage's recipe may change without changing what its run trained: where it is written (a new output_dir is
# a new run, found unfinished) and the settings `eval` reads.
NOT_COMPARED = ("output_dir", "eval")


def _refuse_changed_stages(
    name_or_path: str, stages: list[tuple[Path, Recipe]], processes: int | None
) -> None:
    """Stop before training anything when a finished stage's recipe is no longer the one its run trained with:
    skipping it as finished would leave a run the pipeline no longer describes."""
    from grpo_cli.run_files import read_recipe, read_summary

    changed = []
    for number, (stage_path, recipe) in enumerate(stages, 1):
        out = Path(recipe.output_dir)
        saved = read_recipe(out) if read_summary(out) is not None else None
        if saved is None:
            continue
        if (
            processes is not None
        ):  # as train_recipe sets it: `--num-processes` is part of what a stage runs with
            recipe = recipe.model_copy(deep=True)
            recipe.distributed.num_processes = processes
        keys = changed_keys(recipe, saved)
        if keys:
            changed.append(
                f"stage {number}/{len(stages)} ({recipe.algorithm}, {shown(stage_path)} -> {out}) changed since its "
                f"run finished: "
                f"{', '.join(keys)}"
            )
    if changed:
        raise UserError(
            "\n".join(changed) + f"; retrain with `grpo-cli train {name_or_path} --overwrite` (every stage), "
            "or give the stage a new output_dir"
        )


def changed_keys(recipe: Recipe, saved: dict[str, Any], shown_at_most: int = 5) -> list[str]:
    """The dotted paths where a stage's resolved recipe differs from the recipe.yaml its run saved (`saved`), each
    with both values when they are short, e.g. `trainer.learning_rate (0.05 -> 0.01)`; NOT_COMPARED left out. A
    trainer field that one side leaves unset counts as its default (ours, else TRL's): a recipe that writes down
    the default it ran with has not changed."""
    from grpo_cli.recipe import check_schema

    parsed, problems, _broken = check_schema(saved)
    then = saved if problems else parsed.model_dump(mode="json")  # a recipe of an older schema: as it is
    now = recipe.model_dump(mode="json")
    for data in (then, now):
        for key in NOT_COMPARED:
            data.pop(key, None)
    if isinstance(then.get("trainer"), dict) and then.get("algorithm") == recipe.algorithm:
        then["trainer"], now["trainer"] = _with_defaults(recipe.algorithm, then["trainer"], now["trainer"])
    found = list(_differences(then, now, ""))
    if len(found) > shown_at_most:
        found = [*found[:shown_at_most], f"and {len(found) - shown_at_most} more"]
    return found


def _with_defaults(algorithm: str, a: dict, b: dict) -> tuple[dict, dict]:
    """Both trainer sections with each key the other sets filled with its default, where it has one."""
    from grpo_cli import trainer_fields
    from grpo_cli.algorithms.table import TRAINER_DEFAULTS

    fields = trainer_fields.fields(algorithm)
    defaults = {**{k: f.default for k, f in fields.items()}, **TRAINER_DEFAULTS}
    keys = set(a) | set(b)
    fill = {k: defaults[k] for k in keys if k in defaults}
    return {**fill, **a}, {**fill, **b}


def _differences(then: Any, now: Any, at: str) -> Iterator[str]:
    if isinstance(then, dict) and isinstance(now, dict):
        for key in list(dict.fromkeys([*then, *now])):
            yield from _differences(then.get(key), now.get(key), f"{at}.{key}" if at else str(key))
    elif isinstance(then, list) and isinstance(now, list) and len(then) == len(now):
        for i, (a, b) in enumerate(zip(then, now, strict=True)):
            yield from _differences(a, b, f"{at}[{i}]")
    elif then != now:
        values = f" ({then!r} -> {now!r})" if len(repr(then)) + len(repr(now)) <= 60 else ""
        yield f"{at}{values}"


def stage_recipes(name_or_path: str) -> list[Recipe]:
    """The stages of a pipeline file, each read as `eval` and `report` read a recipe (its schema checked, its
    output_dir resolved); `recipe.path` is the stage file."""
    from grpo_cli.recipe import load_recipe

    return [load_recipe(stage) for stage in stage_paths(find_recipe(name_or_path))]


def run_dirs(name_or_path: str, *, must_exist: bool = False) -> list[Path]:
    """The output directories of a pipeline's stages (for `report`); [Path(name_or_path)] for anything else, so
    that a missing run directory is reported as one. `must_exist`: a stage's missing run is an error saying where
    it was looked for."""
    from grpo_cli.run_checks import where_run_is

    if not is_pipeline(name_or_path):
        return [Path(name_or_path)]
    found = []
    for recipe in stage_recipes(name_or_path):
        out = recipe.output_dir
        if must_exist and not Path(out).expanduser().is_dir():
            where = where_run_is(out, recipe.path.parent)
            raise UserError(
                f"{shown(recipe.path)}: its run {out} does not exist{where}; train the pipeline first"
            )
        found.append(Path(out))
    return found


def shown(path: Path) -> str:
    """A path as the user would type it: a shipped stage by its name (pipeline/grpo), anything else relative to
    the current directory when it is inside it."""
    if path.is_relative_to(RECIPES_DIR) and path.suffix == ".yaml":
        return path.relative_to(RECIPES_DIR).with_suffix("").as_posix()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


@dataclass
class StageEval:
    """One stage of `eval PIPELINE`: its recipe and its run's result, or why it has none."""

    recipe: Recipe
    result: EvalResult | None = None
    problem: str | None = None  # "not trained", "not finished (no summary.json)", "failed (...)"
    untrained: bool = False  # the problem is a run that `train PIPELINE` would write or finish


def evaluate(
    name_or_path: str,
    *,
    num_samples: int | None,
    limit: int | None,
    batch_size: int,
    show: Callable[[Evaluated], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> list[StageEval]:
    """Each stage's run, in order, evaluated exactly as `grpo-cli eval STAGE --adapter RUN_DIR --baseline` does
    (RUN_DIR/eval written; `show` is given each stage's result as it comes): against the model it started from.

    A stage without a finished run, or one whose evaluation fails with a user's mistake (its message printed), is
    reported and the rest still evaluated: evaluating a long pipeline should not stop at its first gap.
    """
    from grpo_cli.run_checks import where_run_is
    from grpo_cli.run_files import read_summary
    from grpo_cli.workflows.evaluate import evaluate_recipe

    stages = stage_recipes(name_or_path)
    done = []
    for number, recipe in enumerate(stages, 1):
        out = Path(recipe.output_dir)
        label = f"stage {number}/{len(stages)} ({recipe.algorithm}, {shown(recipe.path)} -> {out})"
        try:
            if not out.is_dir() or read_summary(out) is None:
                # No summary.json: still training, or stopped, and its final weights are not saved yet.
                missing = "not trained" if not out.is_dir() else "not finished (no summary.json)"
                where = where_run_is(recipe.output_dir, recipe.path.parent) if not out.is_dir() else ""
                say(f"{label}: {missing}{where}; skipped")
                done.append(StageEval(recipe, problem=missing, untrained=True))
                continue
            say(f"{label}: evaluating")
            evaluated = evaluate_recipe(
                recipe,
                adapter=out,
                baseline=True,
                num_samples=num_samples,
                limit=limit,
                batch_size=batch_size,
                note=note,
            )
        except UserError as err:
            say(f"{label}: error: {err}")
            done.append(StageEval(recipe, problem="failed (its error above)"))
            continue
        if show is not None:
            show(evaluated)
        done.append(StageEval(recipe, result=evaluated.result))
    return done
