"""PPO: a recipe -> TRL's PPOTrainer (`trl.experimental.ppo`, TRL 1.12), trained and saved.

How PPO differs from GRPO, and what this module adds around TRL's trainer:

- One completion per prompt: a step samples `per_device_train_batch_size x gradient_accumulation_steps` prompts
  per process. Each completion's reward is its score, placed on its last token, minus `kl_coef` times the
  per-token KL to the reference policy; a learned value model (the critic) turns that into advantages through GAE
  (`gamma`, `lam`), and the policy takes `num_ppo_epochs` passes of the clipped surrogate (`cliprange`) over the
  batch while the critic fits the returns (`vf_coef`, `cliprange_value`). TRL logs the entropy; it adds no bonus.
- The reference policy is the policy with its LoRA adapter disabled: no second copy. Without `lora:` (full
  fine-tuning) TRL keeps a frozen copy of the initial policy.
- The value model: an AutoModelForSequenceClassification with one label and a fresh score head over the policy's
  initial weights (loaded from the recipe's Hub id or directory, or copied from a model built from a config), and
  trained in full, not with LoRA, as TRL does: with LoRA it is most of what PPO trains and keeps in memory. Only this default exists so far; a recipe key naming another critic would
  plug in at `load_value_model`.
- Rewards: TRL's PPOTrainer only takes a reward *model*. `ppo_bridge.RewardFunctionModel` stands in for one and
  calls `ppo_bridge.RolloutRewards`, which scores each rollout with every reward of the recipe through
  `grpo_cli.scoring` (functions and `model:` reward models alike, with their weights, args and on_error, and the
  dataset columns of the rollout's own row) and adds each reward's mean, errors and seconds to the logs, so
  metrics.jsonl has `rewards/<name>` as in a GRPO run.
- Length: TRL counts `total_episodes` (prompts sampled) and ignores `max_steps`. A recipe's `trainer.max_steps`
  is translated to `total_episodes = max_steps x the batch`, so one step is one PPO update, as in GRPO.
- `--resume`: TRL's `train()` takes no checkpoint and restarts its counters, and its checkpoints lack the value
  model (the workarounds are in `ppo_compat`). `CheckpointExtras` saves the value model into every checkpoint; resuming is a warm start that restores
  the policy (adapter or full weights), the value model, the optimizer state (AdamW moments of both), the
  learning-rate schedule's position and the step and episode counters, then runs the remaining steps. It does not
  restore the random state or the data order: the resumed run samples fresh batches, so it is not identical to an
  uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

from grpo_cli import (
    data,
    devices,
    distributed,
    manifest,
    models,
    prompting,
    reward_binding,
    reward_models,
    trainer_fields,
    validation,
)
from grpo_cli.algorithms import ppo_compat
from grpo_cli.algorithms.table import TRAINER_DEFAULTS
from grpo_cli.compat import trl as trl_compat
from grpo_cli.errors import UserError, describe
from grpo_cli.output import phase, say
from grpo_cli.recipe import Recipe
from grpo_cli.run_dir import begin_run, checkpoint_step
from grpo_cli.run_files import atomic_write, finish_run

# Our defaults for TRL's PPOConfig beyond table.TRAINER_DEFAULTS; anything in the recipe's `trainer:` wins.
DEFAULTS = {
    "num_sample_generations": 0,  # TRL's sample tables print over the progress bar; `grpo-cli eval` evaluates
    "stop_token": "eos",  # a completion ends at EOS (TRL: generate all `response_length` tokens)
}


def config(recipe: Recipe, output_dir: Path, train_size: int = 0):
    """PPOConfig for the whole run, `total_episodes` always set (from `max_steps` when the recipe gives it; else
    from the epochs over `train_size` prompts, 0 for the check before anything loads)."""
    from trl.experimental.ppo import PPOConfig

    args = {**TRAINER_DEFAULTS, **DEFAULTS, **devices.hardware_defaults(recipe.trainer), **recipe.trainer}
    if args.get("stop_token_id") is not None and "stop_token" not in recipe.trainer:
        del args["stop_token"]  # TRL refuses both; the recipe's stop_token_id wins over our default
    ppo_config = trainer_fields.build_config(PPOConfig, output_dir=str(output_dir), seed=recipe.seed, **args)
    if ppo_config.max_steps > 0:
        ppo_config.total_episodes = ppo_config.max_steps * episodes_per_step(ppo_config)
    elif ppo_config.total_episodes is None:  # TRL's own fallback, made explicit so steps are known up front
        ppo_config.total_episodes = int(ppo_config.num_train_epochs * train_size)
    return ppo_config


def episodes_per_step(args) -> int:
    """Prompts (one completion each) in one PPO update, over all processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()


def train(recipe: Recipe, output_dir: Path, resume_from: Path | None = None) -> dict:
    from trl.experimental.ppo import PPOTrainer

    from grpo_cli.algorithms.ppo_bridge import RewardFunctionModel, RolloutRewards, check_pad_token, left_pad
    from grpo_cli.callbacks import RunLogger, guard, quiet_trainer
    from grpo_cli.eval_during_training import for_run

    # Rewards first: a bad reward should fail before the policy loads.
    rewards = reward_binding.bind_all(recipe.rewards)

    with phase(f"loading model {models.label(recipe.model)}"):
        model, tokenizer = models.load_model(recipe.model, recipe.seed)
    check_pad_token(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with phase(f"loading dataset {data.label(recipe.dataset)}"):
        train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    # LoRA targets and the chat template, checked now that they are loaded and before the run directory is touched.
    validation.raise_if_problems(recipe, validation.check_loaded(recipe, model, tokenizer, train_rows))
    with phase(f"preparing {len(train_rows)} prompts"):
        train_rows = prompting.prepare(train_rows, recipe.dataset, tokenizer)
    args = config(recipe, output_dir, len(train_rows))
    per_step = episodes_per_step(args)
    _check_enough_rows(len(train_rows), per_step)
    # Reward models load only now, beside the policy on the device the trainer uses (args.device).
    rewards = reward_models.load_reward_models(
        rewards, recipe.model.dtype, device=args.device, trust_remote_code=recipe.model.trust_remote_code
    )
    scorer = RolloutRewards(rewards)
    # TRL's sample tables (num_sample_generations > 0) generate on the held-out prompts: the bridge must know them.
    eval_rows = []
    if held_out is not None and args.num_sample_generations:
        eval_rows = prompting.prepare(held_out, recipe.dataset, tokenizer).to_list()

    main_process = distributed.is_main_process()
    begin_run(
        output_dir,
        "ppo",
        resume_from=resume_from,
        main_process=main_process,
        start_model=models.start_to_keep(recipe.model, model, tokenizer),
        manifest=manifest.describe(recipe) if main_process else None,
    )

    # PPO batches token ids: every prompt left-padded to one width, which the bridge uses to find each rollout's row.
    rows = train_rows.to_list() + eval_rows
    queries = left_pad(
        prompting.tokenize_prompts(tokenizer, [row["prompt"] for row in rows]), tokenizer.pad_token_id
    )
    train_queries, eval_queries = queries[: len(train_rows)], queries[len(train_rows) :]

    with phase("loading the value model (critic)"):
        value_model = load_value_model(recipe, model, tokenizer, resume_from)
    if resume_from is None:
        policy, ref_model = model, None  # None: the policy with its adapter disabled, or a copy TRL makes
        peft_config = models.lora_config(recipe.lora) if recipe.lora else None
        steps_done = 0
    else:
        policy, ref_model = ppo_compat.resumed_policy(recipe, model, resume_from)
        peft_config = None  # the checkpoint's adapter is already on the policy
        steps_done = checkpoint_step(resume_from)

    total_steps = math.ceil(args.total_episodes / per_step)
    args.total_episodes -= steps_done * per_step  # TRL counts from step 0, whatever ran before
    extras = ppo_compat.CheckpointExtras(
        value_model, steps_done=steps_done, total_steps=total_steps, per_step=per_step
    )
    logger = RunLogger(
        output_dir,
        algorithm="ppo",
        resume_from_step=steps_done if resume_from else None,
        rewards=scorer.calls,
    )
    with phase("setting up PPO"):
        trainer = PPOTrainer(
            args=args,
            processing_class=tokenizer,
            model=policy,
            ref_model=ref_model,
            reward_model=RewardFunctionModel(tokenizer, rows, queries, scorer),
            train_dataset=_token_dataset(train_queries),
            value_model=value_model,
            eval_dataset=_token_dataset(eval_queries) if eval_queries else None,
            peft_config=peft_config,
            callbacks=[scorer, extras, logger],  # in this order: RunLogger writes what the others add
        )
    quiet_trainer(trainer)
    evaluation = for_run(recipe, output_dir, logger, tokenizer, held_out, rewards, args.device)
    if evaluation is not None:  # held-out evaluation every eval.every steps, with the policy being trained
        evaluation.install(trainer, lambda: trainer.policy_model)
    guard(trainer, logger)  # after the other callbacks: checkpoints whole or not at all, signals, resumed lr
    ppo_compat.sample_as_configured(trainer)
    ppo_compat.seed_minibatch_shuffle(trainer)
    if distributed.world_size() > 1:
        ppo_compat.unwrap_for_ddp(trainer)
    if args.num_sample_generations:
        trl_compat.wrap_sample_generations(trainer, scorer.unlogged)
    if resume_from is not None:
        ppo_compat.restore_optimizer_and_schedule(trainer, resume_from, total_steps)
        if main_process:  # said where it happens, as the docs say it (docs/ppo.md, "Resume")
            say(
                "PPO resumes weights, critic, optimizer and schedule, not TRL's random state or data order: the "
                "steps from here sample other batches than an uninterrupted run would"
            )
    if main_process:
        atomic_write(output_dir / "recipe.yaml", recipe.to_yaml())
    _run(trainer, tokenizer)

    return finish_run(
        trainer,
        output_dir,
        algorithm="ppo",
        wall_time_s=logger.wall_time,
        resume_from=resume_from,
        extra={
            "trainable_parameters": models.trainable_parameters(trainer.policy_model),
            "value_model_parameters": models.trainable_parameters(value_model),
            "total_episodes": total_steps * per_step,
            "reward_errors": logger.reward_errors(),
            **(evaluation.summary() if evaluation is not None else {}),
        },
    )


def _run(trainer, tokenizer) -> None:
    with warnings.catch_warnings():
        # TRL's `val/ratio_var` is a variance over one value when num_ppo_epochs, num_mini_batches and
        # gradient_accumulation_steps are all 1: NaN (stored as null), with a torch warning at every step.
        warnings.filterwarnings("ignore", message=r"var\(\): degrees of freedom")
        try:
            trainer.train()
        except ValueError as err:
            if not trl_compat.is_empty_mask_error(err):
                raise
            # TRL's PPO ends a response at its first pad token: one that starts with it has no token to train, and
            # costs no KL either, so a policy can drift onto it (seen with too high a learning rate).
            raise UserError(
                f"PPO stopped at step {trainer.state.global_step + 1}: every completion of the batch began with "
                f"the pad token {tokenizer.pad_token!r}, so none had a token to learn from. The policy has "
                "collapsed onto it: lower trainer.learning_rate."
            ) from err


def _check_enough_rows(rows: int, per_step: int) -> None:
    if rows < per_step:
        raise UserError(
            f"dataset: {rows} training rows, fewer than the {per_step} prompts one PPO step samples "
            "(per_device_train_batch_size x gradient_accumulation_steps x processes); TRL drops incomplete "
            "batches, so it would never get one. Use more rows or a smaller batch."
        )


# ---- prompts and the value model ----


def _token_dataset(queries: list[list[int]]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": queries})


def load_value_model(recipe: Recipe, initial_model, tokenizer, resume_from: Path | None):
    """The critic: the policy's initial weights under a fresh one-label score head, or a checkpoint's critic.

    (A recipe key naming another critic, e.g. a trained reward model, would be one more case here.)
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(recipe.seed)  # the same recipe starts from the same score head
    dtype = initial_model.dtype
    with models.quiet_loading():  # the freshly initialised score head is expected, not news
        if resume_from is not None:
            saved = resume_from / ppo_compat.CheckpointExtras.VALUE_MODEL_DIR
            if not (saved / "config.json").is_file():
                raise UserError(
                    f"--resume: {resume_from} has no {ppo_compat.CheckpointExtras.VALUE_MODEL_DIR}/ (the PPO critic), so the "
                    "run cannot continue where it stopped; use --overwrite to start again"
                )
            model = AutoModelForSequenceClassification.from_pretrained(
                saved, dtype=dtype, trust_remote_code=recipe.model.trust_remote_code
            )
        elif recipe.model.name_or_path is None:  # from_config or model.run
            # Built from the same config with the policy's weights copied in: nothing to read back from disk.
            config = copy.deepcopy(initial_model.config)
            config.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
            missing, _unused = model.load_state_dict(initial_model.state_dict(), strict=False)
            if any(not key.startswith("score.") for key in missing):
                raise UserError(
                    f"model.from_config: a {config.model_type} sequence-classification critic does not take the "
                    f"policy's weights (missing {', '.join(missing[:3])}); PPO needs one that does"
                )
        else:
            spec = recipe.model
            try:
                model = AutoModelForSequenceClassification.from_pretrained(
                    spec.name_or_path,
                    num_labels=1,
                    dtype=dtype,
                    trust_remote_code=spec.trust_remote_code,
                    revision=spec.revision,
                )
            except (OSError, ValueError) as err:
                raise UserError(
                    f"cannot build PPO's value model from {spec.name_or_path!r} (AutoModelForSequenceClassification, "
                    f"one label): {describe(err)}"
                ) from err
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
