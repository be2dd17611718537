"""What grpo-cli relies on in torch beyond its public API: a learning-rate scheduler's state, set by hand on resume."""

from __future__ import annotations

from grpo_cli.compat import Relies

CHECKED_AGAINST = {"torch": ("2.13.0",)}

RELIES_ON = (
    Relies(
        "torch.optim.lr_scheduler",
        "LambdaLR.__init__",
        source=("self.lr_lambdas",),
        why="schedule_rates reads each group's schedule function (transformers' schedules are LambdaLRs)",
    ),
    Relies(
        "torch.optim.lr_scheduler",
        "LRScheduler.get_last_lr",
        source=("self._last_lr",),
        why="set_last_rates sets what get_last_lr returns (the rate transformers logs)",
    ),
)


def schedule_rates(scheduler, step: int) -> list[float] | None:
    """Each parameter group's learning rate at `step` on `scheduler`'s schedule; None for a scheduler that is no
    LambdaLR (its rate cannot be computed for an arbitrary step)."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not lambdas:
        return None
    return [base * fn(step) for base, fn in zip(scheduler.base_lrs, lambdas, strict=True)]


def set_last_rates(scheduler, rates: list[float]) -> None:
    """Make `scheduler.get_last_lr()` return `rates`, as if its last step had set them."""
    scheduler._last_lr = list(rates)
