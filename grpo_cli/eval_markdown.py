"""eval.json's metrics as markdown: what report.md and the model card show of a run's evaluation."""

from __future__ import annotations

import math
from typing import Any


def eval_markdown(evaluation: dict[str, Any], heading: str = "### Evaluation") -> list[str]:
    """eval.json's metrics as markdown lines: a column per model evaluated (tuned, base, their difference), under
    `heading`; what report.md and the model card show of a run's evaluation."""
    metrics = evaluation.get("metrics") if isinstance(evaluation.get("metrics"), dict) else {}
    roles = [role for role in ("tuned", "base", "delta") if isinstance(metrics.get(role), dict)]
    if not roles:
        return []
    settings = evaluation.get("settings") if isinstance(evaluation.get("settings"), dict) else {}
    if settings.get("kind") == "pairs":
        measured = f"on {settings.get('num_prompts')} held-out preference pairs"
    else:
        measured = (
            f"on {settings.get('num_prompts')} held-out prompts x {settings.get('num_samples')} "
            f"({settings.get('decoding', 'greedy')})"
        )
    state = settings.get("trainer_state")
    step = state.get("global_step") if isinstance(state, dict) else None
    if step is not None:
        measured += f" at step {step}"
    if evaluation.get("created_at"):
        measured += f", {evaluation['created_at']}"
    lines = [
        heading,
        "",
        f"`grpo-cli eval` {measured}:",
        "",
        "| metric | " + " | ".join(roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for key in metrics[roles[0]]:
        values = [(role, metrics[role].get(key)) for role in roles]
        cells = [format(v, "+.3f" if r == "delta" else ".3f") if _is_number(v) else "-" for r, v in values]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
