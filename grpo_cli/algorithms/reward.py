"""Reward modelling: a recipe -> TRL's RewardTrainer on preference pairs, trained and saved.

The model is a one-label sequence classifier (from a Hub id or directory, a previous run, or built from a config
with a fresh score head); its loss is TRL's pairwise `-log sigmoid(R(prompt, chosen) - R(prompt, rejected))`.
With `lora:` the adapter has task type SEQ_CLS, so peft trains the score head in full beside it
(`modules_to_save`): a fresh head under a frozen LoRA would never learn.

Departure from TRL's own text pipeline, on purpose: TRL appends EOS to each text answer, but GRPO and PPO score a
completion as `prompt + completion` without it (`reward_models.reward_model_texts`), so the score would be read at a
token the model never saw in training. This module tokenizes the pairs itself, exactly as they will be scored.
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli import data, devices, distributed, manifest, models, prompting, trainer_fields, validation
from grpo_cli.algorithms.table import TRAINER_DEFAULTS
from grpo_cli.output import phase
from grpo_cli.recipe import Recipe
from grpo_cli.reward_models import tokenize_pairs
from grpo_cli.run_dir import begin_run, checkpoint_step


def config(recipe: Recipe, output_dir: Path):
    from trl import RewardConfig

    args = {**TRAINER_DEFAULTS, **devices.hardware_defaults(recipe.trainer), **recipe.trainer}
    return trainer_fields.build_config(RewardConfig, output_dir=str(output_dir), seed=recipe.seed, **args)


def lora_config(recipe: Recipe):
    # No modules_to_save of our own: for SEQ_CLS peft adds the head's names ("classifier", "score") itself, and a
    # list given here only gets them appended to it (a saved adapter_config then listed "score" twice).
    return models.lora_config(recipe.lora, task_type="SEQ_CLS")


def train(recipe: Recipe, output_dir: Path, resume_from: Path | None = None) -> dict:
    from trl import RewardTrainer

    from grpo_cli.algorithms.resume_state import TokenCount
    from grpo_cli.callbacks import RunLogger, train_to_the_end
    from grpo_cli.eval_during_training import for_run

    with phase(f"loading reward model {models.label(recipe.model)}"):
        model, tokenizer = models.load_reward_model_for_training(recipe.model, recipe.seed)
    with phase(f"loading dataset {data.label(recipe.dataset)}"):
        train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    # LoRA targets, checked now that the model is loaded and before the run directory is touched.
    validation.raise_if_problems(recipe, validation.check_loaded(recipe, model, tokenizer))
    with phase(f"preparing {len(train_rows)} preference pairs"):
        train_rows = tokenize_pairs(
            prompting.prepare_preferences(train_rows, recipe.dataset, tokenizer), tokenizer
        )

    args = config(recipe, output_dir)  # sets up processes
    main_process = distributed.is_main_process()
    begin_run(
        output_dir,
        "reward",
        resume_from=resume_from,
        main_process=main_process,
        start_model=models.start_to_keep(recipe.model, model, tokenizer),
        manifest=manifest.describe(recipe) if main_process else None,
    )

    logger = RunLogger(
        output_dir, algorithm="reward", resume_from_step=checkpoint_step(resume_from) if resume_from else None
    )
    with phase("setting up reward modelling"):
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            processing_class=tokenizer,
            peft_config=lora_config(recipe) if recipe.lora else None,
            callbacks=[logger],
        )
    trainer.add_callback(TokenCount(trainer, resume_from))
    return train_to_the_end(
        trainer,
        logger,
        recipe,
        output_dir,
        algorithm="reward",
        resume_from=resume_from,
        main_process=main_process,
        evaluation=for_run(recipe, output_dir, logger, tokenizer, held_out, device=args.device),
    )
