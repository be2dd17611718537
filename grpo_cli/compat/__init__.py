"""Fences around the libraries grpo-cli does not own: every use of one's private internals, one module per library.

Each module (`grpo_cli.compat.trl`, `.transformers`, `.accelerate`, `.torch`) says at its top which versions it
was checked against (`CHECKED_AGAINST`) and lists what it relies on (`RELIES_ON`: attributes, parameter names,
texts in a function's source), and holds the code that patches or reads those internals; the rest of grpo-cli
calls its functions. tests/test_compat.py checks every `RELIES_ON` entry against the installed versions, so a
release that moves one fails there rather than in a user's run.

These modules sit at the bottom of grpo-cli: they import third-party libraries (lazily, inside functions: most
commands never load them) and `grpo_cli.errors` only, and only absolute imports, so that `grpo_cli.compat.trl`
never stands in for `trl`.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULES = (
    "grpo_cli.compat.trl",
    "grpo_cli.compat.transformers",
    "grpo_cli.compat.accelerate",
    "grpo_cli.compat.torch",
)


@dataclass(frozen=True)
class Relies:
    """One thing of a library that grpo-cli relies on: `module`'s attribute `name` (dotted, e.g.
    "PPOTrainer.train") exists, takes every parameter in `params`, and its source contains every text in `source`
    (an instance attribute it sets, a message it raises, a call it makes). With `since`, the library's releases
    from that version on have it, and older ones down to the floor do without (the code using it is harmless there)."""

    module: str
    name: str
    params: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    why: str = ""
    since: str = ""
