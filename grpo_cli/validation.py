"""Everything that can be checked about a recipe without loading a model or downloading anything.

`grpo-cli validate` reports all of it at once (`validate`); `train` runs the same checks (`check`) before anything
heavy starts. No torch or trl import here: validate answers in well under a second. What can only be known once
the model is loaded is checked by `check_loaded`, for `train` to call before it touches the output directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli import (
    data,
    data_formats,
    distributed,
    lora_targets,
    prompting,
    reward_binding,
    tasks,
    tool_binding,
)
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.distributed import launched, world_size
from grpo_cli.errors import ConfigError, UserError, describe
from grpo_cli.model_sources import HUB_ID
from grpo_cli.recipe import Recipe, check_schema, finish
from grpo_cli.recipe_files import load_data
from grpo_cli.run_checks import check_model, looks_like_path, reward_run_problem

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


# ---- model and dataset ----


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


# report_to's names -> (the module transformers imports for it, what to pip install for it: grpo-cli's extra for
# the trackers tested with it, tests/test_trackers.py).
TRACKERS = {
    "wandb": ("wandb", '"grpo-cli[wandb]"'),
    "tensorboard": ("tensorboard", '"grpo-cli[tensorboard]"'),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", '"grpo-cli[trackio]"'),
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
        model_problems = check_model(recipe, planned, recipe_dir)
        problems += model_problems
        if not model_problems and not {"lora", "algorithm"} & broken:
            known = lora_targets.from_config(recipe)  # the module names, when the config is readable offline
            problems += lora_targets.problems(recipe.lora.target_modules, known[1], known[0]) if known else []
    if not {"rewards", "eval"} & broken:
        binding = bind_rewards(recipe, planned, recipe_dir)
        problems += binding.problems
    agent = None
    if not {"tools", "environment", "rewards", "algorithm"} & broken:
        agent = tool_binding.bind_agent(recipe) if recipe.tools or recipe.environment else None
        problems += agent.problems if agent else []
    if not {"eval", "dataset", "distributed"} & broken:
        problems += check_eval_during_training(recipe)
    if "dataset" not in broken:
        dataset_problems, columns, first = check_dataset(recipe)
        problems += dataset_problems
        if columns is not None and not {"rewards", "eval"} & broken:
            problems += check_columns(recipe, columns, binding)
        if first is not None and ALGORITHMS[recipe.algorithm].learns_from == "chosen/rejected pairs":
            problems += [
                f"dataset: column {name!r} holds {type(first[name]).__name__} values ({first[name]!r} in the first "
                "row); a preference pair's answers are text, or chat messages"
                for name in prompting.PREFERENCE_COLUMNS
                if name in first and not isinstance(first[name], str | list)
            ]
        if columns is not None and agent is not None:
            problems += tool_binding.column_problems(agent, columns)
    return problems


def check_eval_during_training(recipe: Recipe) -> list[str]:
    """`eval.every` needs held-out rows, and a model whole on the main process (it evaluates alone)."""
    if recipe.eval is None or recipe.eval.every is None:
        return []
    spec, problems = recipe.dataset, []
    if spec is not None and spec.eval_split is None and spec.eval_ratio is None and spec.eval_size is None:
        problems.append(
            "eval.every: evaluation during training needs held-out data: set dataset.eval_size (e.g. 64), "
            "dataset.eval_ratio or dataset.eval_split"
        )
    if recipe.distributed.backend in ("deepspeed-zero3", "fsdp") or recipe.distributed.config_file:
        problems.append(
            "eval.every: evaluation during training runs on the main process alone, which needs the whole model "
            "there (distributed.backend ddp or deepspeed-zero2); evaluate after training with `grpo-cli eval`"
        )
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
    a chat template that fails on the first prompt, and (for any dataset) fewer training rows than one step takes. `train` calls it after loading the model and before it
    touches the output directory; `rows` are the dataset rows (before `prompting.prepare`), when loaded."""
    problems = []
    if recipe.lora is not None and recipe.lora.target_modules != "all-linear":
        modules = {name: type(module).__name__ for name, module in model.named_modules()}
        problems += lora_targets.problems(recipe.lora.target_modules, modules)
    batch_rules = ALGORITHMS[recipe.algorithm].batch_rules
    if rows is not None and batch_rules is not None:
        # The training rows are counted now for any dataset (validate counts only local files and generated
        # tasks): fewer than one step takes would train nothing, or crash inside TRL.
        problems += [p for p in batch_rules(recipe, world_size(), len(rows)) if p.startswith("dataset:")]
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
