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
  calls `RolloutRewards`, which scores each rollout with every reward of the recipe (functions and `model:`
  reward models alike, with their weights, args and on_error, and the dataset columns of the rollout's own row)
  and adds each reward's mean to the logs, so metrics.jsonl has `rewards/<name>` as in a GRPO run.
- Length: TRL counts `total_episodes` (prompts sampled) and ignores `max_steps`. A recipe's `trainer.max_steps`
  is translated to `total_episodes = max_steps x the batch`, so one step is one PPO update, as in GRPO.
- `--resume`: TRL's `train()` takes no checkpoint and restarts its counters, and its checkpoints lack the value
  model. `CheckpointExtras` saves the value model into every checkpoint; resuming is a warm start that restores
  the policy (adapter or full weights), the value model, the optimizer state (AdamW moments of both), the
  learning-rate schedule's position and the step and episode counters, then runs the remaining steps. It does not
  restore the random state or the data order: the resumed run samples fresh batches, so it is not identical to an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from grpo_cli import data, distributed, models, plugins
from grpo_cli.errors import UserError, describe
from grpo_cli.recipe import Recipe
from grpo_cli.runs import atomic_write, begin_run, checkpoint_step, write_summary

# Our defaults for TRL's PPOConfig; anything in the recipe's `trainer:` wins.
DEFAULTS = {
    "logging_steps": 1,  # metrics.jsonl gets every step (TRL: 10)
    "report_to": "none",
    "disable_tqdm": True,  # our own progress bar shows reward and step rate
    "save_only_model": False,  # keep the optimizer state: `--resume` restores it
    "num_sample_generations": 0,  # TRL's sample tables print over the progress bar; `grpo-cli eval` evaluates
    "stop_token": "eos",  # a completion ends at EOS (TRL: generate all `response_length` tokens)
}


def config(recipe: Recipe, output_dir: Path, train_size: int):
    """PPOConfig for the whole run, `total_episodes` always set (from `max_steps` when the recipe gives it)."""
    from trl.experimental.ppo import PPOConfig

    args = {**DEFAULTS, **models.hardware_defaults(recipe.trainer), **recipe.trainer}
    if args.get("stop_token_id") is not None and "stop_token" not in recipe.trainer:
        del args["stop_token"]  # TRL refuses both; the recipe's stop_token_id wins over our default
    try:
        ppo_config = PPOConfig(output_dir=str(output_dir), seed=recipe.seed, **args)
    except (ValueError, TypeError) as err:
        raise UserError(f"trainer: TRL's PPOConfig rejected the settings: {err}") from err
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

    from grpo_cli.algorithms.ppo_bridge import RewardFunctionModel, left_pad
    from grpo_cli.callbacks import RunLogger, guard, quiet_trainer

    # Rewards first: a bad reward should fail before the policy loads.
    rewards = plugins.bind_all(recipe.rewards)
    dtype = models.torch_dtype(recipe.model.dtype)
    scorer = RolloutRewards(
        [r if r.fn else dataclasses.replace(r, fn=RewardModelScore(r.model_path, dtype)) for r in rewards]
    )

    model, tokenizer = models.load_model(recipe.model, recipe.seed)
    _check_pad_token(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    train_rows = data.prepare(train_rows, recipe.dataset, tokenizer)
    args = config(recipe, output_dir, len(train_rows))
    per_step = episodes_per_step(args)
    _check_enough_rows(len(train_rows), per_step)
    # TRL's sample tables (num_sample_generations > 0) generate on the held-out prompts: the bridge must know them.
    eval_rows = []
    if held_out is not None and args.num_sample_generations:
        eval_rows = data.prepare(held_out, recipe.dataset, tokenizer).to_list()

    main_process = distributed.is_main_process()
    begin_run(output_dir, "ppo", resume_from=resume_from, main_process=main_process)
    if recipe.model.from_config is not None:
        models.save_base_model(
            model, tokenizer, output_dir / "base_model", write=main_process and not resume_from
        )

    # PPO batches token ids: every prompt left-padded to one width, which the bridge uses to find each rollout's row.
    rows = train_rows.to_list() + eval_rows
    queries = left_pad(
        data.tokenize_prompts(tokenizer, [row["prompt"] for row in rows]), tokenizer.pad_token_id
    )
    train_queries, eval_queries = queries[: len(train_rows)], queries[len(train_rows) :]

    value_model = load_value_model(recipe, model, tokenizer, resume_from)
    if resume_from is None:
        policy, ref_model = model, None  # None: the policy with its adapter disabled, or a copy TRL makes
        peft_config = models.lora_config(recipe.lora) if recipe.lora else None
        steps_done = 0
    else:
        policy, ref_model = _resumed_policy(recipe, model, resume_from)
        peft_config = None  # the checkpoint's adapter is already on the policy
        steps_done = checkpoint_step(resume_from)

    total_steps = math.ceil(args.total_episodes / per_step)
    args.total_episodes -= steps_done * per_step  # TRL counts from step 0, whatever ran before
    extras = CheckpointExtras(value_model, steps_done=steps_done, total_steps=total_steps, per_step=per_step)
    logger = RunLogger(output_dir, resume_from_step=steps_done if resume_from else None)
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
    guard(trainer, logger)  # after the other callbacks: checkpoints whole or not at all, signals, resumed lr
    if distributed.world_size() > 1:
        _unwrap_for_ddp(trainer)
    scorer.to(trainer.accelerator.device)
    if args.num_sample_generations:
        trainer.generate_completions = scorer.unlogged(trainer.generate_completions)
    if resume_from is not None:
        _restore_optimizer_and_schedule(trainer, resume_from, total_steps)
    if main_process:
        atomic_write(output_dir / "recipe.yaml", recipe.to_yaml())
    _run(trainer, tokenizer)

    trainer.save_model(str(output_dir))
    if not trainer.accelerator.is_main_process:
        return {}
    return write_summary(
        output_dir,
        algorithm="ppo",
        wall_time_s=logger.wall_time,
        extra={
            "trainable_parameters": models.trainable_parameters(trainer.policy_model),
            "value_model_parameters": models.trainable_parameters(value_model),
            "total_episodes": total_steps * per_step,
            "resumed_from": resume_from.name if resume_from else None,
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
            if "sum of the mask is zero" not in str(err):
                raise
            # TRL's PPO ends a response at its first pad token: one that starts with it has no token to train, and
            # costs no KL either, so a policy can drift onto it (seen with too high a learning rate).
            raise UserError(
                f"PPO stopped at step {trainer.state.global_step + 1}: every completion of the batch began with "
                f"the pad token {tokenizer.pad_token!r}, so none had a token to learn from. The policy has "
                "collapsed onto it: lower trainer.learning_rate."
            ) from err


def _unwrap_for_ddp(trainer) -> None:
    """Make TRL 1.12's PPOTrainer work in several processes.

    It reaches into `self.model` as if it were never wrapped (`model.policy` for the reference's forward pass under
    LoRA and when saving, `model.config` for the model card), but with several processes accelerate wraps it in
    DistributedDataParallel, and each of those fails with AttributeError. The wrapper gets the two as plain
    attributes; `policy` is only used there without gradients (training goes through the wrapper).
    Transformers' save also reads an attribute PPOTrainer never sets.
    """
    inner = trainer.accelerator.unwrap_model(trainer.model)
    object.__setattr__(
        trainer.model, "policy", inner.policy
    )  # plain attributes: not registered as submodules
    object.__setattr__(trainer.model, "config", inner.config)
    trainer.is_distributed_loading_by_transformers = False


def _check_enough_rows(rows: int, per_step: int) -> None:
    if rows < per_step:
        raise UserError(
            f"dataset: {rows} training rows, fewer than the {per_step} prompts one PPO step samples "
            "(per_device_train_batch_size x gradient_accumulation_steps x processes); TRL drops incomplete "
            "batches, so it would never get one. Use more rows or a smaller batch."
        )


# ---- rewards ----


class RolloutRewards(TrainerCallback):
    """The bridge's score function: every reward of the recipe on a batch of rollouts, weighted and summed.

    Also a callback, because PPOTrainer logs only the total (`objective/scores`): each logged training step gets
    `rewards/<name>/mean`, the mean over that step's rollouts of the scores the reward gave (None scores left
    out), and `rewards/<name>/errors`, how many scores its `on_error` policy replaced. RunLogger writes the means
    to metrics.jsonl as `rewards/<name>`, the names GRPO runs use.
    """

    def __init__(self, rewards: list[plugins.BoundReward]):
        self.rewards = rewards  # each with a callable `fn`: reward models come wrapped in RewardModelScore
        self.calls = [plugins.RewardCall(r) for r in rewards]
        self.logging = True
        self._reset()

    def __call__(self, prompts: list, completions: list, columns: dict[str, list]) -> list[float]:
        table = []
        for reward, call in zip(self.rewards, self.calls, strict=True):
            scores, errors = call.score(prompts, completions, columns)
            table.append(scores)
            if self.logging:
                valid = [s for s in scores if s is not None]
                self._sums[reward.name] += sum(valid)
                self._counts[reward.name] += len(valid)
                self._errors[reward.name] += errors
        return plugins.weighted_total(self.rewards, table)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "objective/scores" not in logs:
            return
        for reward in self.rewards:
            count = self._counts[reward.name]
            logs[f"rewards/{reward.name}/mean"] = self._sums[reward.name] / count if count else None
            logs[f"rewards/{reward.name}/errors"] = self._errors[reward.name]
        self._reset()

    def _reset(self) -> None:
        names = [r.name for r in self.rewards]
        self._sums = dict.fromkeys(names, 0.0)
        self._counts = dict.fromkeys(names, 0)
        self._errors = dict.fromkeys(names, 0)

    def unlogged(self, method):
        """`method` with scoring left out of the logged means (TRL's sample tables score held-out prompts)."""

        def wrapped(*args, **kwargs):
            self.logging = False
            try:
                return method(*args, **kwargs)
            finally:
                self.logging = True

        return wrapped

    def to(self, device) -> None:
        for reward in self.rewards:
            if isinstance(reward.fn, RewardModelScore):
                reward.fn.model.to(device)


class RewardModelScore:
    """A sequence-classification reward model as a reward function: its score of prompt + completion.

    The text is built as TRL's GRPOTrainer builds it: concatenated for text prompts, through the reward tokenizer's
    chat template for chat prompts; right-padded, no special tokens added.
    """

    def __init__(self, path: str, dtype):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = models.load_tokenizer(path)
        if self.tokenizer.pad_token_id is None:
            raise UserError(
                f"reward model {path}: its tokenizer has no pad token, nor an unk or EOS token to pad with"
            )
        try:
            with _quiet_loading():
                self.model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=1, dtype=dtype
                )
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load reward model {path!r}: {describe(err)}") from err
        # The model scores the last token that is not padding; it must know which id pads.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.requires_grad_(False).eval()

    def __call__(self, prompts: list, completions: list, **_columns: Any) -> list[float]:
        import torch
        from trl.data_utils import apply_chat_template

        if prompts and isinstance(prompts[0], list):
            texts = [
                apply_chat_template({"messages": p + c}, self.tokenizer)["text"]
                for p, c in zip(prompts, completions, strict=True)
            ]
        else:
            texts = [p + c for p, c in zip(prompts, completions, strict=True)]
        inputs = self.tokenizer(
            text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
        ).to(self.model.device)
        with torch.inference_mode():
            return self.model(**inputs).logits[:, 0].float().tolist()


# ---- prompts, value model, checkpoints ----


def _token_dataset(queries: list[list[int]]):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": queries})


def _check_pad_token(tokenizer) -> None:
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise UserError(
            f"the tokenizer pads with its EOS token ({tokenizer.eos_token!r}); TRL's PPO tells padding from text by "
            "the pad id, so it needs a distinct pad token. Use a tokenizer with a pad or unk token, or add one."
        )


def load_value_model(recipe: Recipe, initial_model, tokenizer, resume_from: Path | None):
    """The critic: the policy's initial weights under a fresh one-label score head, or a checkpoint's critic.

    (A recipe key naming another critic, e.g. a trained reward model, would be one more case here.)
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(recipe.seed)  # the same recipe starts from the same score head
    dtype = initial_model.dtype
    with _quiet_loading():  # the freshly initialised score head is expected, not news
        if resume_from is not None:
            saved = resume_from / CheckpointExtras.VALUE_MODEL_DIR
            if not (saved / "config.json").is_file():
                raise UserError(
                    f"--resume: {resume_from} has no {CheckpointExtras.VALUE_MODEL_DIR}/ (the PPO critic), so the "
                    "run cannot continue where it stopped; use --overwrite to start again"
                )
            model = AutoModelForSequenceClassification.from_pretrained(saved, dtype=dtype)
        elif recipe.model.from_config is not None:
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


@contextlib.contextmanager
def _quiet_loading():
    """transformers' loading report and progress bar, silenced: our own progress bar follows."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


class CheckpointExtras(TrainerCallback):
    """What TRL's PPO checkpoints and counters lack: the value model, and (on resume) the step count.

    Each `checkpoint-N/` gets the critic in `value_model/`. When resuming from step N, TRL's `train()` has just
    reset its counters to 0: they are set back to N (and N x the batch for episodes), so metrics.jsonl, the
    progress bar and the next checkpoints continue the run's numbering.
    """

    VALUE_MODEL_DIR = "value_model"

    def __init__(self, value_model, *, steps_done: int, total_steps: int, per_step: int):
        self.value_model = value_model
        self.steps_done = steps_done
        self.total_steps = total_steps
        self.per_step = per_step

    def on_train_begin(self, args, state, control, **kwargs):
        if self.steps_done:
            state.global_step = self.steps_done
            state.episode = self.steps_done * self.per_step
            state.max_steps = self.total_steps

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.value_model.save_pretrained(checkpoint / self.VALUE_MODEL_DIR)


def _resumed_policy(recipe: Recipe, initial_model, checkpoint: Path):
    """(policy, reference) for resuming: the checkpoint's policy; the reference stays the initial model."""
    if recipe.lora:
        from peft import PeftModel

        return PeftModel.from_pretrained(initial_model, str(checkpoint), is_trainable=True), None
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=initial_model.dtype)
    policy.generation_config.pad_token_id = initial_model.generation_config.pad_token_id
    return policy, initial_model


def _restore_optimizer_and_schedule(trainer, checkpoint: Path, total_steps: int) -> None:
    """The checkpoint's AdamW state, and a learning-rate schedule over the whole run at the checkpoint's step.

    TRL built its schedule for the remaining steps only; rebuild it for all of them, then load the optimizer (which
    brings back each group's current learning rate) and the schedule's position, in that order.
    """
    import torch

    trainer.lr_scheduler = None
    trainer.create_scheduler(num_training_steps=total_steps, optimizer=trainer.optimizer.optimizer)
    trainer.callback_handler.lr_scheduler = trainer.lr_scheduler
    device = trainer.accelerator.device
    trainer.optimizer.load_state_dict(
        torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
    )
    trainer.lr_scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
