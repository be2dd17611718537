"""The batch rules TRL's trainers enforce (or trip over) when they size their batches, checked before anything loads.

One function per algorithm that has any, named after it; `table.Algorithm.batch_rules` points at it. SFT and
reward modelling have none: TRL's Trainer batches any size.
"""

from __future__ import annotations

from grpo_cli import trainer_fields


def _divisors(n: int, start: int, limit: int = 12) -> list[int]:
    """The first `limit` divisors of n from `start` (a large n is not scanned to its end)."""
    found = []
    for d in range(start, min(n, 100_000) + 1):
        if n % d == 0:
            found.append(d)
            if len(found) == limit:
                break
    return found


def grpo(recipe, processes: int, rows: int | None = None) -> list[str]:
    """GRPOTrainer generates `num_generations` completions per prompt, in batches each group must fit in; its
    sampler drops a batch of prompts that is not whole, so fewer training `rows` than one batch train nothing."""
    value = trainer_fields.value
    generations = value(recipe, "num_generations")
    if generations is None or generations < 2:
        return [f"trainer.num_generations: GRPO needs at least 2 completions per prompt, got {generations}"]
    # TRL generates generation_batch_size completions at a time: by default processes x per-device batch x
    # steps_per_generation (itself gradient_accumulation_steps by default); each group must fit in it.
    per_device = value(recipe, "per_device_train_batch_size")
    generation_batch = value(recipe, "generation_batch_size")
    steps = value(recipe, "steps_per_generation")
    accumulation = value(recipe, "gradient_accumulation_steps")
    if min(per_device, accumulation, generation_batch or 1, steps or 1) < 1:
        return []  # check_ranges reports it
    if generation_batch is not None and steps is not None:
        return ["trainer: give generation_batch_size or steps_per_generation, not both"]
    if generation_batch is not None:
        if generation_batch % (processes * per_device):
            return [
                f"trainer.generation_batch_size: {generation_batch} is not a multiple of processes ({processes}) x "
                f"per_device_train_batch_size ({per_device}) = {processes * per_device}"
            ]
        batch, how = generation_batch, f"generation_batch_size ({generation_batch})"
    else:
        name = "steps_per_generation" if steps is not None else "gradient_accumulation_steps"
        steps = steps if steps is not None else accumulation
        batch = processes * per_device * steps
        how = f"processes ({processes}) x per_device_train_batch_size ({per_device}) x {name} ({steps}) = {batch}"
    if batch % generations:
        options = _divisors(batch, 2)
        return [
            f"trainer: {how} completions per generation, which is not divisible by num_generations "
            f"({generations}); set num_generations to one of {options} or change the batch size"
        ]
    if rows is not None and rows < batch // generations:
        return [
            f"dataset: {rows} training prompts, fewer than the {batch // generations} one GRPO generation takes "
            f"({how} completions / num_generations {generations}); TRL drops a batch that is not whole, so it "
            "would train nothing. Use more rows or a smaller batch"
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


def ppo(recipe, processes: int, rows: int | None = None) -> list[str]:
    """The rules TRL 1.12's PPOTrainer enforces (or trips over) when it sizes its batches, checked up front; with
    the number of training `rows` when known, that one step's batch can be filled."""
    value = trainer_fields.value
    problems, stop = [], False
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
        if value(recipe, key) < 1:
            if key not in trainer_fields.RANGES:  # else check_ranges reports it
                problems.append(f"trainer.{key}: must be at least 1, got {value(recipe, key)}")
            stop = True
    if problems or stop:
        return problems
    per_device = value(recipe, "per_device_train_batch_size")
    accumulation = value(recipe, "gradient_accumulation_steps")
    mini_batches = value(recipe, "num_mini_batches")
    local_batch = per_device * accumulation
    if local_batch % mini_batches:
        options = _divisors(local_batch, 1)
        problems.append(
            f"trainer: per_device_train_batch_size ({per_device}) x gradient_accumulation_steps ({accumulation}) = "
            f"{local_batch} prompts per process and step, which is not divisible by num_mini_batches "
            f"({mini_batches}); set num_mini_batches to one of {options} or change the batch size"
        )
    elif value(recipe, "whiten_rewards") and local_batch // mini_batches < 8:
        problems.append(
            f"trainer.whiten_rewards: needs at least 8 prompts per minibatch and process, got {local_batch} / "
            f"{mini_batches} = {local_batch // mini_batches}; raise the batch, lower num_mini_batches, or turn it off"
        )
    max_steps, episodes = value(recipe, "max_steps"), value(recipe, "total_episodes")
    if max_steps > 0 and episodes is not None:
        problems.append(
            f"trainer: give max_steps ({max_steps}) or total_episodes ({episodes}), not both "
            f"(a PPO step samples {processes * local_batch} prompts)"
        )
    elif episodes is not None and episodes < 1:
        problems.append(f"trainer.total_episodes: must be at least 1, got {episodes}")
    if value(recipe, "stop_token") is not None and value(recipe, "stop_token_id") is not None:
        problems.append("trainer: give stop_token or stop_token_id, not both")
    if rows is not None and rows < processes * local_batch:
        problems.append(
            f"dataset: {rows} training rows, fewer than the {processes * local_batch} prompts one PPO step samples "
            "(per_device_train_batch_size x gradient_accumulation_steps x processes); TRL drops incomplete "
            "batches, so it would train nothing. Use more rows or a smaller batch"
        )
    return problems
