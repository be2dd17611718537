"""The algorithms grpo-cli trains, one row each: what the recipe, validate, train, runs and model cards know of them.

Each algorithm's own module, `grpo_cli/algorithms/<name>.py`, builds its TRL config (`config(recipe, output_dir)`)
and trains (`train(recipe, output_dir, resume_from)`), with the defaults that are its alone. This table holds
what everything else needs to know about it without importing that module, torch or trl: `validate` reads it in
well under a second. Adding an algorithm is its module and one row here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from grpo_cli.algorithms import batches

# What a run holds, and so what it can be used as: a model that generates, or one that scores.
RunKind = Literal["policy", "reward model"]

# Our defaults for every TRL config; each algorithm module adds its own, and the recipe's `trainer:` wins.
TRAINER_DEFAULTS = {
    "logging_steps": 1,  # metrics.jsonl gets every step (TRL's PPO: 10)
    "report_to": "none",
    "disable_tqdm": True,  # our own progress bar shows reward and step rate
    "save_only_model": False,  # keep the optimizer state: `--resume` restores it
}


@dataclass(frozen=True)
class Algorithm:
    name: str  # the recipe's `algorithm:`
    trainer: str  # TRL's trainer, as a model card names it
    config_class: str  # TRL's config class, "module:Class" (trainer_fields.json is generated from it)
    learns_from: Literal["rewards", "demonstrations", "chosen/rejected pairs"]
    makes: RunKind
    starts_from: tuple[RunKind, ...]  # the kinds of run whose model it can continue (`model.run`)
    # The batch rules TRL enforces (or trips over) for this algorithm: (recipe, processes, rows) -> problems.
    batch_rules: Callable[..., list[str]] | None = None
    # The trainer fields that decide what it computes, whose TRL defaults a run names when the recipe leaves them
    # unset (GRPO's loss_type is DAPO's token-level loss by default, not the paper's).
    deciding_fields: tuple[str, ...] = ()
    # Whether TRL's trainer runs a tool loop while it generates (`tools:`, `environment:` in a recipe).
    supports_tools: bool = False
    # Folders it adds to each checkpoint-N, each a model `--resume` loads (checked before resuming).
    checkpoint_parts: tuple[str, ...] = ()

    @property
    def uses_rewards(self) -> bool:
        """Whether it trains on the recipe's `rewards:` (reinforcement learning) and generates while training."""
        return self.learns_from == "rewards"

    @property
    def card_tags(self) -> list[str]:
        return [self.name, *(["reinforcement-learning"] if self.uses_rewards else [])]

    @property
    def pipeline_tag(self) -> str:
        return "text-classification" if self.makes == "reward model" else "text-generation"

    def module(self) -> ModuleType:
        """`grpo_cli.algorithms.<name>`: its `config` and `train` (imports trl when they run, not before)."""
        return importlib.import_module(f"grpo_cli.algorithms.{self.name}")


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            name="grpo",
            trainer="TRL GRPOTrainer",
            config_class="trl:GRPOConfig",
            learns_from="rewards",
            makes="policy",
            starts_from=("policy",),
            batch_rules=batches.grpo,
            deciding_fields=("loss_type", "beta", "scale_rewards"),
            supports_tools=True,
        ),
        Algorithm(
            name="ppo",
            trainer="TRL PPOTrainer, with a critic",
            config_class="trl.experimental.ppo:PPOConfig",
            learns_from="rewards",
            makes="policy",
            starts_from=("policy",),
            batch_rules=batches.ppo,
            deciding_fields=("kl_coef", "cliprange", "vf_coef"),
            checkpoint_parts=("value_model",),  # the critic (ppo_compat.CheckpointExtras)
        ),
        Algorithm(
            name="sft",
            trainer="TRL SFTTrainer",
            config_class="trl:SFTConfig",
            learns_from="demonstrations",
            makes="policy",
            starts_from=("policy",),
        ),
        Algorithm(
            name="reward",
            trainer="TRL RewardTrainer: a one-label sequence classifier scoring prompt + answer",
            config_class="trl:RewardConfig",
            learns_from="chosen/rejected pairs",
            makes="reward model",
            starts_from=("reward model", "policy"),  # a policy's model gets a fresh score head
        ),
    )
}
NAMES = tuple(ALGORITHMS)


def algorithms_making(kinds: tuple[RunKind, ...]) -> tuple[str, ...]:
    """The algorithms whose runs are of one of `kinds`, e.g. ("reward",) for ("reward model",)."""
    return tuple(a.name for a in ALGORITHMS.values() if a.makes in kinds)
