"""Everything that can be checked about a recipe without loading a model or downloading anything.

`grpo-cli validate` reports all of it at once (`validate`); `train` runs the same checks (`check`) before anything
heavy starts. No torch or trl import here: validate answers in well under a second. What can only be known once
the model is loaded is checked by `check_loaded`, for `train` to call before it touches the output directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli import data, data_formats, distributed, prompting, reward_binding, tasks, trainer_fields
from grpo_cli._paths import RECIPES_DIR
from grpo_cli.algorithms.table import ALGORITHMS, RunKind, algorithms_making
from grpo_cli.distributed import launched, world_size
from grpo_cli.errors import ConfigError, UserError, describe, did_you_mean
from grpo_cli.model_sources import HUB_ID
from grpo_cli.recipe import Recipe, check_schema, finish
from grpo_cli.recipe_files import load_data
from grpo_cli.run_files import run_algorithm

# ---- rewards ----


@dataclass
class RewardBinding:
    """A recipe's rewards bound: the training ones, the eval-only ones (`eval.rewards`), every problem found."""

    training: list[reward_binding.BoundReward] = field(default_factory=list)
    eval_only: list[reward_binding.BoundReward] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    labels: list[str] = field(
        default_factory=list
    )  # "rewards[0]", "eval.rewards[1]", ... for each bound reward


def bind_rewards(
    recipe: Recipe, planned: dict[str, str] | None = None, recipe_dir: Path | None = None
) -> RewardBinding:
    """Bind `rewards` and `eval.rewards` as `train` and `eval` will, with every rule both apply. `recipe_dir`
    (default: that of `recipe.path`) is where the recipe is, for messages about a run it names.

    `validate` and `eval` both call this, so what one accepts the other does: an eval-only reward must not
    repeat a training reward (eval reports those anyway). Reward models are bound (never loaded) too.
    """
    bound, problems = reward_binding.bind_each(recipe.rewards)
    binding = RewardBinding(problems=list(problems))
    for i, reward in bound:
        binding.training.append(reward)
        binding.labels.append(f"rewards[{i}]")
    names = [r.name for r in binding.training]
    for i, entry in enumerate(recipe.eval.rewards if recipe.eval else []):
        label = f"eval.rewards[{i}]"
        try:
            reward = reward_binding.bind(entry, label)
        except UserError as err:
            binding.problems.append(str(err))
            continue
        if reward.name in names:
            binding.problems.append(
                f"{label} ({reward.name}) is already a training reward, whose metrics eval reports anyway: "
                "remove it from eval.rewards"
            )
            continue
        names.append(reward.name)
        binding.eval_only.append(reward)
        binding.labels.append(label)
    if recipe_dir is None and recipe.path is not None:
        recipe_dir = recipe.path.parent
    for label, reward in zip(binding.labels, binding.training + binding.eval_only, strict=True):
        problem = reward_run_problem(reward, label, planned, recipe_dir)
        if problem:
            binding.problems.append(problem)
    return binding


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


# ---- model and dataset ----


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


def known_training_rows(recipe: Recipe) -> int | None:
    """How many rows train, when that is known without loading anything heavy (a generated task, a local file);
    None for a Hub dataset. With prompts shared by several rows this counts rows, never fewer than train gets."""
    spec = recipe.dataset
    try:
        if spec.generate is not None and not tasks.check_task(spec.generate):
            total = tasks.task_prompts(spec.generate)
        elif spec.source is not None and data.is_local(spec.source):
            total = data.read_local(Path(spec.source)).rows
        else:
            return None
    except UserError:
        return None  # check_dataset says what is wrong with it
    return data.training_rows(spec, total) if spec.eval_split is None else total


def check_dataset(recipe: Recipe) -> tuple[list[str], list[str] | None, dict | None]:
    """Problems with the dataset section and its data: (problems, the columns if known, a first row if known)."""
    spec = recipe.dataset
    problems = []
    columns, first, rows, local = None, None, None, None
    if spec.generate is not None:
        problems = tasks.check_task(spec.generate)
        if not problems:
            generated = tasks.TASKS[spec.generate.task](size=1, seed=0, **spec.generate.options)
            first, columns = generated[0], list(generated[0])
    elif data.is_local(spec.source):
        try:
            local = data.read_local(Path(spec.source))
            columns, first, rows = local.columns, local.first, local.rows
        except UserError as err:
            problems.append(str(err))
    elif looks_like_path(spec.source):
        problems.append(f"dataset.source: no such file: {spec.source}")
    elif not HUB_ID.match(spec.source):
        problems.append(
            f"dataset.source: {spec.source!r} is neither a local data file "
            f"({', '.join(data_formats.LOCAL_FORMATS)}) nor a Hub dataset id (org/name)"
        )
    problems += [p for p in [data.eval_split_problem(spec)] if p]
    if spec.eval_split is not None and data.is_local(spec.eval_split):
        try:
            data.read_local(Path(spec.eval_split))
        except UserError as err:
            problems.append(f"dataset.eval_split: {err}")
    if spec.generate is not None and not problems:
        problems += [
            p for p in [data.held_out_problem(spec, tasks.task_prompts(spec.generate), "prompts")] if p
        ]
    elif (
        local is not None
        and local.table is not None
        and (spec.eval_size is not None or spec.eval_ratio is not None)
    ):
        # Counted as train splits them: rows that share a prompt are held out together.
        keys = data.prompt_keys(spec, local.row_dicts(prompting.prompt_columns(spec)))
        problems += [p for p in [data.split_problem(spec, keys)] if p]
    elif rows is not None:
        problems += [p for p in [data.held_out_problem(spec, rows)] if p]
    if spec.prompt is not None:
        template = prompting.template_problems(spec.prompt)
        problems += template
        if not template and first is not None and all(c in first for c in prompting.prompt_columns(spec)):
            try:
                prompting.build_prompt(spec, first, chat=False)
            except UserError as err:
                problems.append(str(err))
    return problems, columns, first


def check_columns(recipe: Recipe, columns: list[str], binding: RewardBinding) -> list[str]:
    problems = []
    learns = ALGORITHMS[recipe.algorithm].learns_from
    if learns == "demonstrations":
        problems += [p for p in [prompting.sft_target_problem(recipe.dataset, columns)] if p]
        if recipe.dataset.completion is not None and not prompting.template_problems(
            recipe.dataset.completion
        ):
            problems += [
                f"dataset.completion uses column {column!r}, which the dataset does not have; columns: {', '.join(columns)}"
                for column in prompting.template_fields(recipe.dataset.completion)
                if column not in columns
            ]
    if learns == "chosen/rejected pairs":
        problems += prompting.preference_problems(recipe.dataset, columns)
    elif recipe.dataset.prompt is None and not {"prompt", "messages"} & set(columns):
        problems.append(
            f"dataset: no prompt: set dataset.prompt to a template over the columns ({', '.join(columns)}), "
            'e.g. prompt: "{' + columns[0] + '}", or provide a `prompt` or `messages` column'
        )
    if recipe.dataset.prompt is not None and not prompting.template_problems(recipe.dataset.prompt):
        for column in prompting.prompt_columns(recipe.dataset):
            if column not in columns:
                problems.append(
                    f"dataset.prompt uses column {column!r}, which the dataset does not have; columns: {', '.join(columns)}"
                )
    if learns == "demonstrations" and recipe.dataset.completion is not None:
        problems += [
            p.replace("dataset.prompt", "dataset.completion")
            for p in prompting.template_problems(recipe.dataset.completion)
        ]
    for label, reward in zip(binding.labels, binding.training + binding.eval_only, strict=True):
        for column in reward.columns:
            if column not in columns and column != "prompt":
                problems.append(
                    f"{label} ({reward.entry.name}) reads column {column!r}, which the dataset does not have; "
                    f"columns: {', '.join(columns)} (point it at another column in its args)"
                )
    return problems


# report_to's names -> (the module transformers imports for it, the pip package that provides it).
TRACKERS = {
    "wandb": ("wandb", "wandb"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
    "comet_ml": ("comet_ml", "comet_ml"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
    "neptune": ("neptune", "neptune"),
    "swanlab": ("swanlab", "swanlab"),
    "codecarbon": ("codecarbon", "codecarbon"),
    "azure_ml": ("azureml", "azureml-core"),
}


def check_machine(trainer: dict) -> list[str]:
    """Trainer settings this machine cannot honour, found before anything loads (each failed deep in a run)."""
    import importlib.util

    problems = []
    if trainer.get("fp16") and trainer.get("bf16"):
        problems.append("trainer: give fp16 or bf16, not both")
    elif trainer.get("fp16") and not distributed.gpu_present():
        problems.append("trainer.fp16: half precision needs a GPU and this machine has none; remove it")
    if trainer.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        problems.append("trainer.use_vllm: vLLM is not installed (pip install vllm, on a machine with a GPU)")
    trackers = trainer.get("report_to")
    for name in [trackers] if isinstance(trackers, str) else trackers or []:
        module, package = TRACKERS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            problems.append(f"trainer.report_to: {name} is not installed (pip install {package})")
    return problems


def check(
    recipe: Recipe,
    processes: int | None = None,
    broken: set[str] | frozenset = frozenset(),
    planned: dict[str, str] | None = None,
    recipe_dir: Path | None = None,
) -> list[str]:
    """Every problem found, as one line each; empty when the recipe is good to run.

    `broken` names sections the schema could not read (see recipe.check_schema): their checks are skipped.
    `recipe_dir` is where the recipe file is (default: that of `recipe.path`), for messages about missing runs.
    """
    if recipe_dir is None and recipe.path is not None:
        recipe_dir = recipe.path.parent
    spec = recipe.distributed
    if processes is None:
        processes = world_size() if launched() else spec.num_processes * spec.num_machines
    problems = []
    if not {"algorithm", "trainer"} & broken:
        batch_rules = ALGORITHMS[recipe.algorithm].batch_rules
        rows = known_training_rows(recipe) if "dataset" not in broken else None
        problems += batch_rules(recipe, processes, rows) if batch_rules else []
    if "distributed" not in broken:
        problems += distributed.check(spec)
    if "trainer" not in broken:
        problems += check_machine(recipe.trainer)
    if "model" not in broken:
        problems += check_model(recipe, planned, recipe_dir)
    if not {"rewards", "eval"} & broken:
        binding = bind_rewards(recipe, planned, recipe_dir)
        problems += binding.problems
    if "dataset" not in broken:
        dataset_problems, columns, _first = check_dataset(recipe)
        problems += dataset_problems
        if columns is not None and not {"rewards", "eval"} & broken:
            problems += check_columns(recipe, columns, binding)
    return problems


def warnings_for(recipe: Recipe) -> list[str]:
    """What is allowed but probably not meant, found without loading a model: chat data that a tokenizer without a
    chat template would turn into plain text (say once more at train, once the tokenizer has loaded)."""
    from grpo_cli import models

    spec = recipe.dataset
    if spec.chat_template is not None or spec.prompt is not None:
        return []
    has_template = models.chat_template_on_disk(recipe.model)
    if has_template is not False:
        return []  # the common case reads no data file a second time
    _problems, _columns, first = check_dataset(recipe)
    name = recipe.model.name_or_path or prompting.BUILT_FROM_CONFIG
    warning = prompting.chat_as_text_warning(spec, first, has_template, name)
    return [warning] if warning else []


def validate(name_or_path: str, overrides: list[str] | None = None, processes: int | None = None) -> Recipe:
    """Load a recipe and check everything about it; raise one ConfigError listing every problem found.

    A file that cannot be read at all (not found, not UTF-8, not YAML, a bad `extends:` or override) is one
    problem on its own; otherwise the schema, trainer, reward, dataset and batch problems come together.
    """
    path, merged = load_data(name_or_path, overrides)
    recipe, problems, broken = check_schema(merged)
    if processes is not None and "distributed" not in broken:
        recipe.distributed.num_processes = processes
    if "*" not in broken:
        problems += check(recipe, broken=broken, recipe_dir=path.parent)
    if problems:
        raise ConfigError(path.name, list(dict.fromkeys(problems)))
    return finish(recipe, path)


def raise_if_problems(recipe: Recipe, problems: list[str]) -> None:
    if problems:
        raise ConfigError(recipe.path.name if recipe.path else "recipe", problems)


# ---- once the model is loaded ----


def check_loaded(recipe: Recipe, model, tokenizer, rows=None) -> list[str]:
    """What can only be checked with the model and tokenizer in hand: LoRA target modules that match no module,
    and a chat template that fails on the first prompt. `train` calls it after loading the model and before it
    touches the output directory; `rows` are the dataset rows (before `prompting.prepare`), when loaded."""
    problems = []
    if recipe.lora is not None and recipe.lora.target_modules != "all-linear":
        problems += _check_lora_targets(
            recipe.lora.target_modules, [name for name, _ in model.named_modules()]
        )
    if rows is not None and len(rows):
        try:
            chat = prompting.uses_chat(recipe.dataset, tokenizer)
            if chat:
                prompt = prompting.build_prompt(recipe.dataset, dict(rows[0]), chat=True)
                prompting.tokenize_prompts(tokenizer, [prompt])
        except UserError as err:
            problems.append(str(err))
        except Exception as err:  # a template is user code (Jinja): any error is the template's
            problems.append(
                f"dataset: the tokenizer's chat template fails on the first prompt ({describe(err)}); "
                "fix the template or set dataset.chat_template: false"
            )
    return problems


def _check_lora_targets(targets: str | list[str], module_names: list[str]) -> list[str]:
    """peft's matching: a string is a regular expression over full module names, a list holds name suffixes."""
    leaves = sorted({name.rsplit(".", 1)[-1] for name in module_names if name})
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as err:
            return [f"lora.target_modules: {targets!r} is not a regular expression: {err}"]
        if not any(pattern.fullmatch(name) for name in module_names):
            return [
                f"lora.target_modules: {targets!r} matches no module of the model; its modules: {', '.join(leaves)}"
            ]
        return []
    problems = []
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in module_names):
            problems.append(
                f"lora.target_modules: {target!r} matches no module of the model{did_you_mean(target, leaves)}; "
                f"its modules: {', '.join(leaves)}"
            )
    return problems
