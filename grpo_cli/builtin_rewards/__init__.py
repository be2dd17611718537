"""The built-in reward plugins, importable as `grpo_cli.builtin_rewards.<file>`.

Their source is the top-level `rewards/` folder (one kind of reward per file). Pointing this package's `__path__`
there gives them a private, stable module name: they pickle, and a user's own module named `rewards` neither
shadows them nor is shadowed by them.
"""

from grpo_cli._paths import REWARDS_DIR

__path__ = [str(REWARDS_DIR)]
