"""Workarounds for TRL 1.12's PPOTrainer (`trl.experimental.ppo`): what it lacks or gets wrong, one piece each.

- `CheckpointExtras`: its checkpoints lack the value model (the critic), and its `train()` restarts the step and
  episode counters at 0 whatever ran before.
- `resumed_policy` and `restore_optimizer_and_schedule`: its `train()` takes no checkpoint, so `--resume` is a warm
  start: the checkpoint's policy, AdamW state and learning-rate schedule position are put back by hand (the
  critic comes back through `ppo.load_value_model`).
- `unwrap_for_ddp`: it reaches into its model as if accelerate never wrapped it, which fails in several processes.
- `sample_as_configured`: its rollouts take every sampling setting it leaves unset (repetition_penalty, ...) from
  the policy's generation_config.json, and it passes output settings beside its GenerationConfig, which warns.
- `seed_minibatch_shuffle`: it seeds torch only, but shuffles each PPO epoch's minibatches with numpy's global
  random state, so two runs of one recipe and seed trained differently.

TRL 1.13 removed PPOTrainer, so none of this has an upstream fix to wait for; each piece names the TRL 1.12
behaviour it works around, so it can go when that behaviour does. The code that reaches into TRL's, transformers'
and torch's internals is in `grpo_cli.compat`, which lists what it relies on (tests/test_compat.py checks it).
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from grpo_cli.compat import transformers as transformers_compat
from grpo_cli.compat import trl as trl_compat
from grpo_cli.recipe import Recipe


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
            trl_compat.continue_counters(
                state,
                steps_done=self.steps_done,
                episodes_done=self.steps_done * self.per_step,
                max_steps=self.total_steps,
            )

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.value_model.save_pretrained(checkpoint / self.VALUE_MODEL_DIR)


def resumed_policy(recipe: Recipe, initial_model, checkpoint: Path):
    """(policy, reference) for resuming: the checkpoint's policy; the reference stays the initial model."""
    if recipe.lora:
        from peft import PeftModel

        return PeftModel.from_pretrained(initial_model, str(checkpoint), is_trainable=True), None
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=initial_model.dtype, trust_remote_code=recipe.model.trust_remote_code
    )
    policy.generation_config.pad_token_id = initial_model.generation_config.pad_token_id
    return policy, initial_model


def restore_optimizer_and_schedule(trainer, checkpoint: Path, total_steps: int) -> None:
    """The checkpoint's AdamW state, and a learning-rate schedule over the whole run at the checkpoint's step.

    TRL built its schedule for the remaining steps only; rebuild it for all of them, then load the optimizer (which
    brings back each group's current learning rate) and the schedule's position, in that order.
    """
    import torch

    transformers_compat.replace_schedule(trainer, total_steps, trainer.optimizer.optimizer)
    device = trainer.accelerator.device
    trainer.optimizer.load_state_dict(
        torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
    )
    trainer.lr_scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))


def unwrap_for_ddp(trainer) -> None:
    """Make TRL 1.12's PPOTrainer work in several processes.

    It reaches into `self.model` as if it were never wrapped (`model.policy` for the reference's forward pass under
    LoRA and when saving, `model.config` for the model card), but with several processes accelerate wraps it in
    DistributedDataParallel, and each of those fails with AttributeError. The wrapper gets the two as plain
    attributes (not registered as submodules); `policy` is only used there without gradients (training goes
    through the wrapper). Transformers' save also reads an attribute PPOTrainer never sets.
    """
    trl_compat.unwrap_for_ddp(trainer)


def sample_as_configured(trainer) -> None:
    """Make TRL 1.12's PPO rollouts sample with its own settings only.

    `PPOTrainer.train` samples with `GenerationConfig(max_new_tokens, temperature, top_k=0, top_p=1, do_sample)`
    and leaves the rest unset; transformers fills what is unset from the policy's generation_config.json, so a
    Qwen2.5-Instruct policy would sample with its repetition_penalty 1.05 too. The policy's `generate` now gets the
    config with those settings neutral (`generation.without_model_defaults`); the model's own generation config,
    which a saved model keeps, is left as it is. The `return_dict_in_generate` and `output_scores` TRL passes
    beside the config go into it: transformers warns at every run that passing both is deprecated.
    """
    from grpo_cli.generation import without_model_defaults

    trl_compat.sample_as_configured(trainer, without_model_defaults)


def seed_minibatch_shuffle(trainer) -> None:
    """Seed numpy's global random state as TRL 1.12's PPOTrainer seeds torch (`local_seed`: the seed, offset per
    process), so that its `np.random.permutation` of each PPO epoch's batch is the same in every run.

    PPOTrainer does not call `Trainer.__init__`, where transformers would seed numpy too; unseeded, two runs of the
    same recipe gave the same rewards for 15 steps but a different `loss/value_avg` from step 1, and held-out
    accuracy 0.88 or 0.92 in the end.
    """
    trl_compat.seed_minibatch_shuffle(trainer)
