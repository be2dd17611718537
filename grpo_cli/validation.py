"""Everything that can be checked about a recipe without loading a model or downloading anything.

`grpo-cli validate` reports all of it at once; `train` runs the same checks before anything heavy starts.
No torch or trl import here: validate answers in well under a second.
"""

from __future__ import annotations

from grpo_cli import data, distributed, plugins
from grpo_cli.distributed import launched, world_size
from grpo_cli.errors import UserError
from grpo_cli.recipe import Recipe
from grpo_cli.trainer_fields import fields


def trainer_value(recipe: Recipe, key: str):
    """A trainer setting as TRL will see it: the recipe's value, else TRL's default."""
    if key in recipe.trainer:
        return recipe.trainer[key]
    return fields(recipe.algorithm)[key].default


def check_batch_shape(recipe: Recipe, processes: int) -> list[str]:
    if recipe.algorithm != "grpo":
        return check_ppo_batch_shape(recipe, processes)
    generations = trainer_value(recipe, "num_generations")
    if generations is None or generations < 2:
        return [f"trainer.num_generations: GRPO needs at least 2 completions per prompt, got {generations}"]
    # TRL generates generation_batch_size completions at a time: by default processes x per-device batch x
    # steps_per_generation (itself gradient_accumulation_steps by default); each group must fit in it.
    per_device = trainer_value(recipe, "per_device_train_batch_size")
    generation_batch = trainer_value(recipe, "generation_batch_size")
    steps = trainer_value(recipe, "steps_per_generation")
    if generation_batch is not None:
        batch, how = generation_batch, f"generation_batch_size ({generation_batch})"
    else:
        name = "steps_per_generation" if steps is not None else "gradient_accumulation_steps"
        steps = steps if steps is not None else trainer_value(recipe, "gradient_accumulation_steps")
        batch = processes * per_device * steps
        how = f"processes ({processes}) x per_device_train_batch_size ({per_device}) x {name} ({steps}) = {batch}"
    if batch % generations:
        options = sorted({d for d in range(2, batch + 1) if batch % d == 0})
        return [
            f"trainer: {how} completions per generation, which is not divisible by num_generations "
            f"({generations}); set num_generations to one of {options} or change the batch size"
        ]
    return []


# PPOConfig fields that PPOTrainer overwrites with what it computes from the batch settings.
PPO_COMPUTED = (
    "world_size",
    "batch_size",
    "local_batch_size",
    "micro_batch_size",
    "mini_batch_size",
    "local_mini_batch_size",
    "num_total_batches",
)


def check_ppo_batch_shape(recipe: Recipe, processes: int) -> list[str]:
    """The rules TRL 1.12's PPOTrainer enforces (or trips over) when it sizes its batches, checked up front."""
    problems = []
    for key in PPO_COMPUTED:
        if key in recipe.trainer:
            problems.append(
                f"trainer.{key}: PPOTrainer computes it from per_device_train_batch_size, "
                "gradient_accumulation_steps, num_mini_batches and the number of processes; remove it"
            )
    for key in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_mini_batches",
        "num_ppo_epochs",
        "response_length",
        "local_rollout_forward_batch_size",
    ):
        if trainer_value(recipe, key) < 1:
            problems.append(f"trainer.{key}: must be at least 1, got {trainer_value(recipe, key)}")
    if problems:
        return problems
    per_device = trainer_value(recipe, "per_device_train_batch_size")
    accumulation = trainer_value(recipe, "gradient_accumulation_steps")
    mini_batches = trainer_value(recipe, "num_mini_batches")
    local_batch = per_device * accumulation
    if local_batch % mini_batches:
        options = [d for d in range(1, local_batch + 1) if local_batch % d == 0]
        problems.append(
            f"trainer: per_device_train_batch_size ({per_device}) x gradient_accumulation_steps ({accumulation}) = "
            f"{local_batch} prompts per process and step, which is not divisible by num_mini_batches "
            f"({mini_batches}); set num_mini_batches to one of {options} or change the batch size"
        )
    elif trainer_value(recipe, "whiten_rewards") and local_batch // mini_batches < 8:
        problems.append(
            f"trainer.whiten_rewards: needs at least 8 prompts per minibatch and process, got {local_batch} / "
            f"{mini_batches} = {local_batch // mini_batches}; raise the batch, lower num_mini_batches, or turn it off"
        )
    max_steps, episodes = trainer_value(recipe, "max_steps"), trainer_value(recipe, "total_episodes")
    if max_steps > 0 and episodes is not None:
        problems.append(
            f"trainer: give max_steps ({max_steps}) or total_episodes ({episodes}), not both "
            f"(a PPO step samples {processes * local_batch} prompts)"
        )
    elif episodes is not None and episodes < 1:
        problems.append(f"trainer.total_episodes: must be at least 1, got {episodes}")
    if trainer_value(recipe, "stop_token") is not None and trainer_value(recipe, "stop_token_id") is not None:
        problems.append("trainer: give stop_token or stop_token_id, not both")
    return problems


def check_rewards_and_columns(recipe: Recipe) -> list[str]:
    bound, problems = plugins.bind_each(recipe.rewards)
    labelled = [(f"rewards[{i}]", reward) for i, reward in bound]
    for i, entry in enumerate(recipe.eval.rewards if recipe.eval else []):
        try:
            labelled.append((f"eval.rewards[{i}]", plugins.bind(entry, f"eval.rewards[{i}]")))
        except UserError as err:
            problems.append(str(err))
    try:
        columns = data.known_columns(recipe.dataset)
    except UserError as err:
        return [*problems, str(err)]
    if columns is None:
        return problems  # a Hub dataset: its columns are known once it loads
    if recipe.dataset.prompt is None and not {"prompt", "messages"} & set(columns):
        problems.append(
            f"dataset: no prompt: set dataset.prompt to a template over the columns ({', '.join(columns)}), "
            'e.g. prompt: "{' + columns[0] + '}", or provide a `prompt` or `messages` column'
        )
    for column in data.prompt_columns(recipe.dataset):
        if column not in columns:
            problems.append(
                f"dataset.prompt uses column {column!r}, which the dataset does not have; columns: {', '.join(columns)}"
            )
    for label, reward in labelled:
        for column in reward.columns:
            if column not in columns and column != "prompt":
                problems.append(
                    f"{label} ({reward.entry.name}) reads column {column!r}, which the dataset does not have; "
                    f"columns: {', '.join(columns)} (point it at another column in its args)"
                )
    return problems


def check(recipe: Recipe, processes: int | None = None) -> list[str]:
    """Every problem found, as one line each; empty when the recipe is good to run."""
    spec = recipe.distributed
    if processes is None:
        processes = world_size() if launched() else spec.num_processes * spec.num_machines
    problems = check_batch_shape(recipe, processes)
    problems += distributed.check(spec)
    problems += check_rewards_and_columns(recipe)
    return problems


def raise_if_problems(recipe: Recipe, problems: list[str]) -> None:
    if problems:
        name = recipe.path.name if recipe.path else "recipe"
        head = f"{name}: {len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise UserError(head + ":\n" + "\n".join(f"  - {p}" for p in problems), problems)
