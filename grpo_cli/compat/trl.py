"""What grpo-cli relies on in TRL beyond its public API, the patches of TRL 1.12's PPOTrainer
(`trl.experimental.ppo`, removed in TRL 1.13: none of these has an upstream fix to wait for), and the state
TRL's trainers keep outside their checkpoints (`algorithms/resume_state.py` saves and restores it).

`algorithms/ppo_compat.py` says why each PPO patch exists; this module holds the code that reaches into TRL.
"""

from __future__ import annotations

from grpo_cli.compat import Relies

CHECKED_AGAINST = {"trl": ("1.12.0",)}

PPO = "trl.experimental.ppo.ppo_trainer"
GRPO = "trl.trainer.grpo_trainer"

# What PPOTrainer.train prints before training; callbacks.quiet_trainer drops it (our progress bar says as much).
PPO_BANNER = "===training policy==="

# The ValueError TRL's PPO raises when no response of a minibatch has a token to train (see algorithms/ppo._run).
EMPTY_MASK_ERROR = "sum of the mask is zero"

RELIES_ON = (
    Relies(PPO, "PPOTrainer.train", source=(f'accelerator.print("{PPO_BANNER}")',), why="PPO_BANNER"),
    Relies(PPO, "masked_var", source=(f"The {EMPTY_MASK_ERROR}",), why="EMPTY_MASK_ERROR"),
    Relies(
        PPO,
        "PPOTrainer.train",
        source=("self.state.global_step = 0", "self.state.episode = 0"),
        why="continue_counters: train() restarts its counters, and a resumed run sets them back",
    ),
    Relies(PPO, "OnlineTrainerState", source=("episode",), why="continue_counters sets state.episode"),
    Relies(
        PPO,
        "PPOTrainer.__init__",
        source=(
            "self.local_seed =",
            "self.policy_model =",
            "self.callback_handler = CallbackHandler(",
            "self.model = PolicyAndValueWrapper(",
        ),
        why="the attributes the patches below read",
    ),
    Relies(
        PPO,
        "PPOTrainer.train",
        source=("np.random.permutation(",),
        why="seed_minibatch_shuffle: minibatches are shuffled with numpy's global random state",
    ),
    Relies(
        PPO,
        "generate",
        params=("lm_backbone", "queries", "pad_token_id", "generation_config"),
        source=(
            "lm_backbone.generate(",
            "generation_config=generation_config",
            "return_dict_in_generate=True",
        ),
        why="sample_as_configured: rollouts call the policy's generate with a GenerationConfig and output settings",
    ),
    Relies(
        PPO,
        "PPOTrainer.save_model",
        source=("self.model.policy",),
        why="unwrap_for_ddp: it reaches into the (DDP-wrapped) model's policy",
    ),
    Relies(
        PPO,
        "PPOTrainer.generate_completions",
        params=("sampling",),
        why="wrap_sample_generations: TRL's sample tables during training",
    ),
    Relies(
        "trl.experimental.utils",
        "get_reward",
        params=("model", "query_responses", "pad_token_id", "context_length"),
        source=("getattr(model, model.base_model_prefix)", "model.score(output.hidden_states[-1])"),
        why="ppo_bridge.RewardFunctionModel implements the reward-model interface get_reward calls",
    ),
    Relies(
        "trl.trainer.utils",
        "get_config_model_id",
        source=("_name_or_path",),
        why="TRL builds a reference model from config._name_or_path (models.save_base_model points it)",
    ),
    Relies(
        GRPO,
        "GRPOTrainer.__init__",
        source=("self._step = 0", "self._buffered_inputs = None"),
        why="generation_state: the micro-step counter and the generation buffer live outside the checkpoint",
    ),
    Relies(
        GRPO,
        "GRPOTrainer._prepare_inputs",
        source=(
            "generate_every = self.args.steps_per_generation * self.num_iterations",
            "if self._step % generate_every == 0 or self._buffered_inputs is None:",
            "self._buffered_inputs[self._step % self.args.steps_per_generation]",
        ),
        why="generation_state: when it generates and which buffered slice a step trains on",
    ),
    Relies(
        GRPO,
        "GRPOTrainer._get_train_sampler",
        params=("dataset",),
        source=("return RepeatSampler(",),
        why="keep_train_sampler records the sampler it builds",
    ),
    Relies(
        "trl.trainer.utils",
        "RepeatSampler.__init__",
        source=("self.generator = torch.Generator()",),
        why="sampler_rng_state: the prompt order comes from the sampler's own generator, seeded once",
    ),
    Relies(
        "trl.trainer.utils",
        "RepeatSampler.__iter__",
        source=("torch.randperm(self.num_samples, generator=self.generator)",),
        why="sampler_rng_state: each epoch (each iter) draws its order from that generator",
    ),
    Relies(
        "trl.trainer.sft_trainer",
        "SFTTrainer.__init__",
        source=("self._total_train_tokens = 0",),
        why="tokens_trained: the count behind num_tokens lives outside the checkpoint",
    ),
    Relies(
        "trl.trainer.reward_trainer",
        "RewardTrainer.__init__",
        source=("self._total_train_tokens = 0",),
        why="tokens_trained: the count behind num_tokens lives outside the checkpoint",
    ),
    Relies(
        "trl.data_utils",
        "apply_chat_template",
        params=("example", "processing_class"),
        why="scoring.reward_model_texts renders what a reward model reads as TRL's reward trainer does",
    ),
    Relies(
        GRPO,
        "GRPOTrainer._get_tool_suffix_ids",
        params=("self", "tool_messages"),
        source=(
            "self.processing_class.apply_chat_template(",
            "chat_template=self.chat_template,",
            "**self.chat_template_kwargs,",
            "self._tokenizer.eos_token_id",
            "if self._is_vlm:",
        ),
        why="tool_suffix_ids: the tool loop outside training appends tool results with the tokens TRL's would",
    ),
)


def continue_counters(state, *, steps_done: int, episodes_done: int, max_steps: int) -> None:
    """Set PPOTrainer's step and episode counters (which `train()` has just reset to 0) back to a resumed run's."""
    state.global_step = steps_done
    state.episode = episodes_done
    state.max_steps = max_steps


def seed_minibatch_shuffle(trainer) -> None:
    """Seed numpy's global random state as PPOTrainer seeds torch (`local_seed`: the seed, offset per process)."""
    import numpy as np

    np.random.seed(trainer.local_seed % 2**32)


def sample_as_configured(trainer, prepare) -> None:
    """PPO rollouts generate with `prepare(config)` instead of TRL's `config`, and with the output settings TRL
    passes beside it (`return_dict_in_generate`, `output_scores`) moved into that config.

    The policy gets `generate` as an instance attribute: PPOTrainer calls `model.policy.generate`, and the model's
    own method and generation config stay as they are.
    """
    from transformers import GenerationConfig

    policy = trainer.policy_model
    generate = policy.generate
    settings = set(GenerationConfig().to_dict())

    def generate_as_configured(*args, generation_config=None, **kwargs):
        if generation_config is not None:
            generation_config = prepare(generation_config)
            for key in [k for k in kwargs if k in settings]:
                setattr(generation_config, key, kwargs.pop(key))
        return generate(*args, generation_config=generation_config, **kwargs)

    policy.generate = generate_as_configured


def unwrap_for_ddp(trainer) -> None:
    """Give accelerate's DistributedDataParallel wrapper of PPOTrainer's model the `policy` and `config` PPOTrainer
    reads from it as if it were unwrapped (plain attributes, not registered submodules: training still goes
    through the wrapper), and set the transformers Trainer attribute PPOTrainer never sets (its save reads it from transformers 5.19)."""
    inner = trainer.accelerator.unwrap_model(trainer.model)
    object.__setattr__(trainer.model, "policy", inner.policy)
    object.__setattr__(trainer.model, "config", inner.config)
    trainer.is_distributed_loading_by_transformers = False


def wrap_sample_generations(trainer, wrap) -> None:
    """PPOTrainer's sample tables (`generate_completions`) run as `wrap(generate_completions)`."""
    trainer.generate_completions = wrap(trainer.generate_completions)


def is_empty_mask_error(err: BaseException) -> bool:
    """Whether `err` is TRL's PPO refusing a minibatch in which no response has a token to train."""
    return isinstance(err, ValueError) and EMPTY_MASK_ERROR in str(err)


def tool_suffix_ids(
    tokenizer, tool_messages: list[dict], chat_template, chat_template_kwargs: dict
) -> list[int]:
    """The tokens TRL's GRPOTrainer appends after an assistant turn for its `tool_messages` (the tool results and
    the next generation prompt), computed by TRL's own method on a text-only tokenizer (`grpo_cli.tool_loop`)."""
    from types import SimpleNamespace

    from trl.trainer.grpo_trainer import GRPOTrainer

    trainer = SimpleNamespace(
        processing_class=tokenizer,
        _tokenizer=tokenizer,
        chat_template=chat_template,
        chat_template_kwargs=chat_template_kwargs,
        _is_vlm=False,
    )
    return GRPOTrainer._get_tool_suffix_ids(trainer, tool_messages)


def keep_train_sampler(trainer) -> None:
    """Keep the sampler GRPOTrainer builds for training (a RepeatSampler) where `sampler_rng_state` finds it."""
    original = trainer._get_train_sampler

    def get_train_sampler(*args, **kwargs):
        trainer._grpo_cli_train_sampler = original(*args, **kwargs)
        return trainer._grpo_cli_train_sampler

    trainer._get_train_sampler = get_train_sampler


def _sampler_generator(trainer):
    sampler = getattr(trainer, "_grpo_cli_train_sampler", None)
    return getattr(sampler, "generator", None)  # none when the sampler does not shuffle


def sampler_rng_state(trainer):
    """The state of the generator that orders the training prompts, or None (not shuffled, or no sampler yet)."""
    generator = _sampler_generator(trainer)
    return None if generator is None else generator.get_state()


def set_sampler_rng_state(trainer, state) -> None:
    generator = _sampler_generator(trainer)
    if generator is not None and state is not None:
        generator.set_state(state.cpu())


def generation_state(trainer) -> dict:
    """GRPOTrainer's micro-step counter and, between two generations, the completions it still trains on."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    mid_buffer = trainer._step % generate_every != 0
    return {"step": trainer._step, "buffered_inputs": trainer._buffered_inputs if mid_buffer else None}


def set_generation_state(trainer, state: dict) -> None:
    trainer._step = state["step"]
    trainer._buffered_inputs = state["buffered_inputs"]


def tokens_trained(trainer) -> float:
    """The SFT or reward trainer's count of the tokens trained on, which it logs as `num_tokens`."""
    return trainer._total_train_tokens


def set_tokens_trained(trainer, tokens: float) -> None:
    trainer._total_train_tokens = tokens
