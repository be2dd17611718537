"""SFT: a recipe -> TRL's SFTTrainer on demonstrations, trained and saved.

The data becomes TRL's prompt-completion format: `prompt` built exactly as the RL stages build it (the
`dataset.prompt` template or a `prompt`/`messages` column, with the system prompt and the chat template when the
tokenizer has one), and `completion` from the `dataset.completion` template (e.g. "{answer}"), a `completion`
column, or the last (assistant) turn of a chat `messages` column. TRL then computes the loss on the completion
tokens only (its `completion_only_loss`, on by default for this format; `trainer.completion_only_loss: false`
trains on the prompt too) and appends EOS to text completions, so the model learns to stop.
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli import data, devices, distributed, manifest, models, prompting, trainer_fields, validation
from grpo_cli.algorithms.table import TRAINER_DEFAULTS
from grpo_cli.output import phase
from grpo_cli.recipe import Recipe
from grpo_cli.run_dir import begin_run, checkpoint_step


def config(recipe: Recipe, output_dir: Path):
    from trl import SFTConfig

    args = {**TRAINER_DEFAULTS, **devices.hardware_defaults(recipe.trainer), **recipe.trainer}
    return trainer_fields.build_config(SFTConfig, output_dir=str(output_dir), seed=recipe.seed, **args)


def train(recipe: Recipe, output_dir: Path, resume_from: Path | None = None) -> dict:
    from trl import SFTTrainer

    from grpo_cli.algorithms.resume_state import TokenCount
    from grpo_cli.callbacks import RunLogger, train_to_the_end
    from grpo_cli.eval_during_training import for_run

    with phase(f"loading model {models.label(recipe.model)}"):
        model, tokenizer = models.load_model(recipe.model, recipe.seed)
    with phase(f"loading dataset {data.label(recipe.dataset)}"):
        train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    # LoRA targets and the chat template, checked now that they are loaded and before the run directory is touched.
    validation.raise_if_problems(recipe, validation.check_loaded(recipe, model, tokenizer, train_rows))
    with phase(f"preparing {len(train_rows)} demonstrations"):
        train_rows = prompting.prepare_sft(train_rows, recipe.dataset, tokenizer)

    args = config(recipe, output_dir)  # sets up processes
    main_process = distributed.is_main_process()
    begin_run(
        output_dir,
        "sft",
        resume_from=resume_from,
        main_process=main_process,
        start_model=models.start_to_keep(recipe.model, model, tokenizer),
        manifest=manifest.describe(recipe) if main_process else None,
    )

    logger = RunLogger(
        output_dir, algorithm="sft", resume_from_step=checkpoint_step(resume_from) if resume_from else None
    )
    with phase("setting up SFT"):
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_rows,
            processing_class=tokenizer,
            peft_config=models.lora_config(recipe.lora) if recipe.lora else None,
            callbacks=[logger],
        )
    trainer.add_callback(TokenCount(trainer, resume_from))
    return train_to_the_end(
        trainer,
        logger,
        recipe,
        output_dir,
        algorithm="sft",
        resume_from=resume_from,
        main_process=main_process,
        evaluation=for_run(recipe, output_dir, logger, tokenizer, held_out, device=args.device),
    )
