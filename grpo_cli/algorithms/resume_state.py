"""What TRL's trainers keep outside their checkpoints, saved in each one so that `--resume` continues the run
exactly: GRPO's generation state (`GenerationState`), SFT's and the reward trainer's token count (`TokenCount`).

transformers' Trainer restores the weights, the optimizer, the schedule, the global RNG states (Python, NumPy,
torch) and the data position (it skips the batches already trained). TRL 1.12's GRPOTrainer keeps three more
things outside its checkpoints, and without them a resumed run trains on other prompts or completions than the
uninterrupted one from its first step on:

- its micro-step counter, which says when to generate (every `steps_per_generation x num_iterations` micro-steps)
  and which slice of the generated batch a step trains on; it restarts at 0;
- the completions generated but not yet trained on (`steps_per_generation` or `num_iterations` above 1): a resume
  between two generations generated them again, from another model and RNG state;
- the generator of its RepeatSampler, seeded once, which shuffles the prompts at the start of every epoch: a run
  resumed in epoch e shuffled them as in epoch 0.

`GenerationState` writes them to `checkpoint-N/grpo_state_<process>.pt` and puts them back on resume.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from grpo_cli.compat import trl as trl_compat
from grpo_cli.output import say


def state_file(process_index: int) -> str:
    return f"grpo_state_{process_index}.pt"


class GenerationState(TrainerCallback):
    """Save GRPOTrainer's generation state in every checkpoint; restore it when resuming from `resume_from`."""

    def __init__(self, trainer, resume_from: Path | None):
        self.trainer = trainer
        self.resume_from = resume_from
        self.epoch_start = (
            None  # the sampler's generator as the current epoch began (before it drew the order)
        )
        trl_compat.keep_train_sampler(trainer)

    def on_train_begin(self, args, state, control, **kwargs):
        # After the trainer loaded the checkpoint, before the first epoch draws its prompt order.
        if self.resume_from is None:
            return
        import torch

        path = self.resume_from / state_file(args.process_index)
        if not path.exists():
            say(
                f"{self.resume_from.name} has no {path.name} (written by an older grpo-cli): the prompt order and "
                "the completions of the next steps cannot be restored, so the resumed run will differ from an "
                "uninterrupted one"
            )
            return
        saved = torch.load(path, map_location=self.trainer.accelerator.device, weights_only=True)
        trl_compat.set_generation_state(self.trainer, saved["generation"])
        trl_compat.set_sampler_rng_state(self.trainer, saved["sampler_rng"])

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch_start = trl_compat.sampler_rng_state(self.trainer)

    def on_save(self, args, state, control, **kwargs):
        import torch

        # A resumed run begins the epoch of the step after the checkpoint: after the last step of an epoch (the
        # epoch count is then whole), the next one, drawn from the generator as it is now; otherwise the same one,
        # drawn again from the generator as that epoch began.
        epoch_ended = float(state.epoch or 0).is_integer()
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        checkpoint.mkdir(parents=True, exist_ok=True)
        saved = {
            "generation": trl_compat.generation_state(self.trainer),
            "sampler_rng": trl_compat.sampler_rng_state(self.trainer) if epoch_ended else self.epoch_start,
        }
        torch.save(saved, checkpoint / state_file(args.process_index))


class TokenCount(TrainerCallback):
    """TRL's SFT and reward trainers count the tokens trained on (`num_tokens` in metrics.jsonl) outside their
    checkpoints, so a resumed run counted again from 0: the count goes in `checkpoint-N/token_count.json` and comes
    back on resume (the count is gathered over every process, so the main one writes it)."""

    FILE = "token_count.json"

    def __init__(self, trainer, resume_from: Path | None):
        self.trainer = trainer
        self.resume_from = resume_from

    def on_train_begin(self, args, state, control, **kwargs):
        import json

        path = None if self.resume_from is None else self.resume_from / self.FILE
        if path is not None and path.exists():
            trl_compat.set_tokens_trained(self.trainer, json.loads(path.read_text())["tokens"])

    def on_save(self, args, state, control, **kwargs):
        import json

        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            checkpoint.mkdir(parents=True, exist_ok=True)
            tokens = trl_compat.tokens_trained(self.trainer)
            (checkpoint / self.FILE).write_text(json.dumps({"tokens": tokens}) + "\n")
