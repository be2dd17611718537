"""grpo-cli: fine-tune language models with reinforcement learning (GRPO, PPO) from a YAML recipe."""

__version__ = "0.1.0"
