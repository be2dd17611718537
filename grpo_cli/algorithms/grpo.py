"""GRPO: a recipe -> TRL's GRPOTrainer, trained and saved.

GRPO samples `num_generations` completions per prompt and uses each completion's reward minus its group's mean
(divided by the group's std when `trainer.scale_rewards` is "group", TRL's default) as its advantage: no critic.
TRL 1.12 defaults `beta` (the KL coefficient) to 0, so there is no reference model unless the recipe sets it.
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli import (
    data,
    devices,
    distributed,
    generation,
    manifest,
    models,
    prompting,
    reward_binding,
    reward_models,
    scoring,
    tool_binding,
    tool_calls,
    trainer_fields,
    validation,
)
from grpo_cli.algorithms.table import TRAINER_DEFAULTS
from grpo_cli.output import phase
from grpo_cli.recipe import Recipe
from grpo_cli.run_dir import begin_run, checkpoint_step

# Our defaults for TRL's GRPOConfig beyond table.TRAINER_DEFAULTS; anything in the recipe's `trainer:` wins.
DEFAULTS = {
    "ddp_find_unused_parameters": False,  # every trainable parameter is used in each forward pass
}


def config(recipe: Recipe, output_dir: Path, tokenizer=None, eos_ids=()):
    """GRPOConfig, each reward weighted as its entry says; without a tokenizer (the check before anything loads),
    without its generation settings."""
    from trl import GRPOConfig

    args = {**TRAINER_DEFAULTS, **DEFAULTS, **devices.hardware_defaults(recipe.trainer), **recipe.trainer}
    if tokenizer is not None and not args.get(
        "use_vllm"
    ):  # vLLM's sampling parameters have no suppress_tokens
        args["generation_kwargs"] = {
            **generation.suppressed_special_tokens(tokenizer, eos_ids),
            **(args.get("generation_kwargs") or {}),
        }
    return trainer_fields.build_config(
        GRPOConfig,
        output_dir=str(output_dir),
        seed=recipe.seed,
        reward_weights=[entry.weight for entry in recipe.rewards],
        # TRL loads the reference model itself (full fine-tuning, beta > 0): as the policy was loaded
        **{"trust_remote_code": recipe.model.trust_remote_code, **args},
    )


def train(recipe: Recipe, output_dir: Path, resume_from: Path | None = None) -> dict:
    from trl import GRPOTrainer

    from grpo_cli.algorithms.resume_state import GenerationState
    from grpo_cli.callbacks import RunLogger, ToolMetrics, train_to_the_end
    from grpo_cli.eval_during_training import for_run

    # Rewards first: a bad reward should fail before a model loads.
    rewards = reward_binding.bind_all(recipe.rewards)
    agent = tool_binding.bind_all(recipe) if recipe.tools or recipe.environment else None

    with phase(f"loading model {models.label(recipe.model)}"):
        model, tokenizer = models.load_model(recipe.model, recipe.seed)
    with phase(f"loading dataset {data.label(recipe.dataset)}"):
        train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    # LoRA targets and the chat template, checked now that they are loaded and before the run directory is touched.
    problems = tool_calls.prepare_tokenizer(tokenizer, recipe.tool_template) if agent else []
    validation.raise_if_problems(
        recipe, problems + validation.check_loaded(recipe, model, tokenizer, train_rows)
    )
    with phase(f"preparing {len(train_rows)} prompts"):
        train_rows = prompting.prepare(train_rows, recipe.dataset, tokenizer)

    args = config(recipe, output_dir, tokenizer, generation.eos_ids(model, tokenizer))  # sets up processes
    # Reward models too go through scoring (not TRL's own reward-model path), so they log /errors and /seconds.
    rewards = reward_models.load_reward_models(
        rewards,
        recipe.model.dtype,
        args.device,
        args.chat_template_kwargs,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    reward_funcs = [scoring.RewardCall(r) for r in rewards]
    main_process = distributed.is_main_process()
    begin_run(
        output_dir,
        "grpo",
        resume_from=resume_from,
        main_process=main_process,
        start_model=models.start_to_keep(recipe.model, model, tokenizer),
        manifest=manifest.describe(recipe) if main_process else None,
    )

    toolbox = tool_calls.toolbox(agent) if agent else None
    logger = RunLogger(
        output_dir,
        algorithm="grpo",
        resume_from_step=checkpoint_step(resume_from) if resume_from else None,
        rewards=reward_funcs,
    )
    with phase("setting up GRPO"):
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_rows,
            processing_class=tokenizer,
            peft_config=models.lora_config(recipe.lora) if recipe.lora else None,
            callbacks=[*([ToolMetrics(toolbox.tally)] if toolbox else []), logger],
            tools=toolbox.tools if toolbox else None,
            environment_factory=toolbox.environment_factory if toolbox else None,
        )
    trainer.add_callback(GenerationState(trainer, resume_from))
    return train_to_the_end(
        trainer,
        logger,
        recipe,
        output_dir,
        algorithm="grpo",
        resume_from=resume_from,
        main_process=main_process,
        evaluation=for_run(recipe, output_dir, logger, tokenizer, held_out, rewards, args.device),
    )
