"""What grpo-cli patches in accelerate: one Accelerator's `print`, to drop a line a trainer prints through it."""

from __future__ import annotations

from grpo_cli.compat import Relies

# The floor (pyproject.toml, .ci/floors.sh) and the newest release checked.
CHECKED_AGAINST = {"accelerate": ("1.4.0", "1.16.0")}

RELIES_ON = (
    Relies(
        "accelerate",
        "Accelerator.print",
        why="drop_printed_line replaces it on one instance (TRL's PPOTrainer prints its banner through it)",
    ),
)


def drop_printed_line(accelerator, line: str) -> None:
    """`accelerator.print(line)` prints nothing from now on; everything else it is asked to print still shows."""
    print_ = accelerator.print

    def print_all_but_the_line(*args, **kwargs):
        if args != (line,):
            print_(*args, **kwargs)

    accelerator.print = print_all_but_the_line
