"""Whether a directory a recipe names is what it must be: a finished run of the right kind (`model.run`, a
`model:` reward naming a reward run, a pipeline stage's output), or a saved model; and where a relative run path
was looked for, said in every message about one. Read without loading anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from grpo_cli import reward_binding, trainer_fields
from grpo_cli._paths import RECIPES_DIR
from grpo_cli.algorithms.table import ALGORITHMS, RunKind, algorithms_making
from grpo_cli.errors import UserError, did_you_mean
from grpo_cli.model_sources import HUB_ID
from grpo_cli.recipe import Recipe
from grpo_cli.run_files import run_algorithm


def reward_run_problem(
    reward: reward_binding.BoundReward,
    label: str,
    planned: dict[str, str] | None,
    recipe_dir: Path | None = None,
) -> str | None:
    """A `model:<dir>` reward naming a run directory (or a pipeline stage's) must be a finished reward run."""
    path = getattr(reward, "model_path", None)
    if path is None:
        return None
    if looks_like_hub_id_only(path, planned):
        return _unplanned_run_problem(path, f"{label} ({reward.entry.name})", planned) or _model_dir_problem(
            path, f"{label} ({reward.entry.name})"
        )
    return run_problem(path, f"{label} ({reward.entry.name})", ("reward model",), planned, recipe_dir)


def _unplanned_run_problem(path: str, label: str, planned: dict[str, str] | None) -> str | None:
    """In a pipeline, a `model:` name beside the stages' output directories (`runs/reward` next to `runs/sft`)
    that no stage writes and that does not exist: a missing stage, not a Hub id."""
    if not planned:
        return None
    local = Path(path).expanduser().resolve()
    if local.exists() or local.parent not in {Path(out).parent for out in planned}:
        return None
    written = ", ".join(f"{out} ({algorithm})" for out, algorithm in planned.items())
    return (
        f"{label}: no earlier stage writes {local} and it does not exist; the stages before write {written}"
    )


def _model_dir_problem(path: str, label: str) -> str | None:
    """Why a `model:` reward meant as a local directory (by its form, or because something is there) is no saved
    model; None for a Hub id, which only loading can check."""
    local = Path(path).expanduser()
    if not looks_like_path(path) and not local.exists():
        return None  # `org/name`: a Hub id
    if not local.exists():
        return f"{label}: {local.resolve()} does not exist; give a saved reward model's directory or a Hub id"
    if not local.is_dir():
        return f"{label}: {local.resolve()} is a file; give a saved reward model's directory or a Hub id"
    if not (local / "config.json").is_file() and not (local / "adapter_config.json").is_file():
        return (
            f"{label}: {local.resolve()} holds no model (no config.json); give a directory saved with "
            "save_pretrained, or a reward run's output directory"
        )
    return None


def looks_like_hub_id_only(path: str, planned: dict[str, str] | None) -> bool:
    """Whether a reward model name is not a run: a Hub id or a saved model directory without a recipe.yaml."""
    if str(Path(path).expanduser().resolve()) in (planned or {}):
        return False
    if not Path(path).expanduser().exists() and looks_like_path(path, Path.cwd()):
        return False  # `runs/rm` beside `runs/`: a missing run, said so now rather than asked of the Hub
    return not (Path(path).expanduser() / "recipe.yaml").is_file()


def relative_runs_note(recipe_dir: Path | None) -> str | None:
    """What to say when a recipe in another directory than the current one names run directories by relative
    paths: they are taken from the current directory (as `-o` is), not from the recipe's. None when the recipe is
    here, or shipped (its runs are always written where the command runs)."""
    if recipe_dir is None:
        return None
    recipe_dir = recipe_dir.resolve()
    if recipe_dir == Path.cwd().resolve() or recipe_dir.is_relative_to(RECIPES_DIR.resolve()):
        return None
    return (
        "run directories (output_dir, model.run) are relative to the current directory, not to the recipe's "
        f"{recipe_dir}: run grpo-cli from there, or write absolute paths"
    )


def where_run_is(directory: str, recipe_dir: Path | None = None) -> str:
    """For a message about a missing run: ` (its absolute path)`, with `relative_runs_note` when it applies (and
    whether the run is there, beside the recipe); empty for an absolute path, already shown as it is."""
    path = Path(directory).expanduser()
    if path.is_absolute():
        return ""
    note = relative_runs_note(recipe_dir)
    if note is None:
        return f" ({path.absolute()})"
    beside = recipe_dir.resolve() / path
    found = f"; {beside} exists" if beside.exists() else ""
    return f" ({path.absolute()}{found}; {note})"


def looks_like_path(value: str, base: Path | None = None) -> bool:
    """Whether a model or dataset name is meant as a local path rather than a Hub id (`org/name`). With `base`,
    also `dir/name` where `dir` is a directory in `base`: `runs/nosuch` beside `runs/` is a mistyped run."""
    if (
        value.startswith(("/", "./", "../", "~", ".\\"))
        or value.count("/") > 1
        or (os.sep != "/" and os.sep in value)
    ):
        return True
    first, slash, _ = value.partition("/")
    return base is not None and bool(slash) and (base / first).is_dir()


def run_problem(
    directory: str,
    label: str,
    kinds: tuple[RunKind, ...],
    planned: dict[str, str] | None = None,
    recipe_dir: Path | None = None,
) -> str | None:
    """Why `directory` is not a finished run of one of `kinds` (policy, reward model), if so. `planned` maps the
    output directories of earlier pipeline stages (resolved) to their algorithms: those runs will exist by the time
    this stage starts. `recipe_dir`: where the recipe naming it is (see `where_run_is`)."""
    path = Path(directory).expanduser()
    algorithm = (planned or {}).get(str(path.resolve()))
    if algorithm is None:
        if not (path / "recipe.yaml").is_file():
            what = "does not exist" if not path.exists() else "holds no grpo-cli run (no recipe.yaml)"
            where = where_run_is(directory, recipe_dir)
            return f"{label}: {directory} {what}{where}; train the stage that writes it first"
        try:
            algorithm = run_algorithm(path)
        except UserError as err:
            return f"{label}: {err}"
        if not (path / "summary.json").is_file():
            return (
                f"{label}: the run in {directory} is not finished (no summary.json); finish it with --resume"
            )
    made = ALGORITHMS[algorithm].makes if algorithm in ALGORITHMS else None
    if made not in kinds:
        if made == "reward model":
            return (
                f"{label}: {directory} is a reward-model run, not a policy; use it as a reward "
                f"(rewards: [{{name: 'model:{directory}'}}])"
            )
        if kinds == ("reward model",):
            return f"{label}: {directory} holds a {str(algorithm).upper()} run, not a reward model (algorithm: reward)"
        expected = ", ".join(algorithms_making(kinds))
        return f"{label}: {directory} holds a {str(algorithm).upper()} run; expected one of {expected}"
    return None


def check_model(
    recipe: Recipe, planned: dict[str, str] | None = None, recipe_dir: Path | None = None
) -> list[str]:
    if recipe.model.run is not None:
        starts_from = ALGORITHMS[recipe.algorithm].starts_from
        problem = run_problem(recipe.model.run, "model.run", starts_from, planned, recipe_dir)
        return [problem] if problem else []
    if recipe.model.from_config is not None:
        model_type = recipe.model.from_config.model_type
        known = trainer_fields.causal_lm_model_types()
        if model_type not in known:
            return [
                f"model.from_config.model_type: transformers has no causal LM of type {model_type!r}"
                f"{did_you_mean(model_type, known)}; e.g. qwen2, llama, gpt2"
            ]
    name = recipe.model.name_or_path
    if name is None:
        return []
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        return [f"model.name_or_path: {name} is a file; give the directory of a saved model (or a Hub id)"]
    if not path.exists() and looks_like_path(name):
        return [f"model.name_or_path: no such directory: {name} (a Hub id looks like org/name)"]
    if not path.exists() and not HUB_ID.match(name):
        return [f"model.name_or_path: {name!r} is neither a local directory nor a Hub id (org/name)"]
    return []
