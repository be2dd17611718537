"""`report`'s view of held-out evaluation during training (`eval.every`): the training reward and the held-out
metric on one figure (two panels, one x axis), every run overlaid in its colour, each trip of the reward-hacking
alarm marked by a dashed red line; and report.md's lines about it.

The held-out metric of a run is the one its alarm watched (summary.json's `held_out_eval.metric`; while a run is in
progress or was stopped, the same rule applied to its recipe.yaml); the trips are the evaluations where
`eval/diverging` turned 1 in metrics.jsonl, so a stopped run shows them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpo_cli.divergence import PREFIX
from grpo_cli.run_files import atomic_write, read_recipe

FILE_NAME = "held_out_vs_training_reward.png"
TITLE = "Training reward and held-out metric"


def metric(run) -> str | None:
    """The metrics.jsonl name of the run's held-out metric, None when it has no evaluation during training."""
    known = ((run.summary or {}).get("held_out_eval") or {}).get("metric")
    if isinstance(known, str):
        return known
    recipe = read_recipe(run.path) or {}
    section = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
    entries = [*(section.get("rewards") or []), *(recipe.get("rewards") or [])]
    names = [e.get("name") for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]
    candidates = [f"{PREFIX}rewards/{name}" for name in names]
    candidates += [f"{PREFIX}pairwise_accuracy"]
    return next((key for key in candidates if any(key in row for row in run.metrics)), None)


def trips(run) -> list[int]:
    """The steps at which the run's alarm tripped (`eval/diverging` 0 -> 1)."""
    found, before = [], 0
    for row in run.metrics:
        state = row.get(f"{PREFIX}diverging")
        if state is None:
            continue
        if state and not before:
            found.append(row["step"])
        before = state
    return found


def _points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [
        (row["step"], float(row[key]))
        for row in rows
        if isinstance(row.get(key), int | float) and not isinstance(row.get(key), bool)
    ]


def plot(runs, output: Path) -> tuple[str, str, Path, tuple[str, ...]] | None:
    """Draw the figure into `output` when any run evaluated during training: (key, title, path, the labels of
    the runs drawn), else None."""
    drawn = [(i, run, metric(run)) for i, run in enumerate(runs)]
    drawn = [(i, run, key) for i, run, key in drawn if key and _points(run.metrics, key)]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 6), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    top = figure.add_subplot(2, 1, 1)
    bottom = figure.add_subplot(2, 1, 2, sharex=top)
    keys = dict.fromkeys(key for _, _, key in drawn)
    for i, run, key in drawn:
        colour = f"C{i % 10}"
        reward = _points(run.metrics, "reward")
        if reward:
            top.plot(*zip(*reward, strict=True), color=colour, alpha=0.3, linewidth=1)
        per_eval = _points(run.metrics, f"{PREFIX}train_reward")
        if per_eval:
            top.plot(*zip(*per_eval, strict=True), color=colour, marker="o", markersize=4, label=run.label)
        held = _points(run.metrics, key)
        shown = key.removeprefix(PREFIX) if len(keys) > 1 else run.label
        bottom.plot(*zip(*held, strict=True), color=colour, marker="o", markersize=4, label=shown)
        for n, step in enumerate(trips(run)):
            for axes in (top, bottom):
                axes.axvline(step, color="red", linestyle="--", linewidth=1.2)
            if n == 0:
                where = (step, 1)
                bottom.annotate(
                    "reward hacking?",
                    where,
                    xycoords=("data", "axes fraction"),
                    color="red",
                    fontsize="small",
                    ha="right",
                    va="top",
                    rotation=90,
                )
    top.set_title(
        f"{TITLE}\n(top faint: each step; dots: the mean since the evaluation before)", fontsize="medium"
    )
    top.set_ylabel("training reward")
    bottom.set_ylabel("held-out metric")
    bottom.set_xlabel("step")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    path = Path(output) / FILE_NAME
    atomic_write(path, lambda f: figure.savefig(f, format="png"))
    labels = tuple(run.label for _, run, _ in drawn)
    return f"{PREFIX}held_out", TITLE, path, labels


def markdown(runs) -> list[str]:
    """report.md's section: each run's held-out metric, first, best and last, and the alarm's trips."""
    lines = []
    for run in runs:
        key = metric(run)
        held = _points(run.metrics, key) if key else []
        if not held:
            continue
        best = max(held, key=lambda point: point[1])
        lines += [
            f"### Held-out evaluation during training: {run.label}",
            "",
            f"{key.removeprefix(PREFIX)}: {held[0][1]:.3f} (step {held[0][0]}) -> {held[-1][1]:.3f} "
            f"(step {held[-1][0]}), best {best[1]:.3f} (step {best[0]}), {len(held)} evaluations",
            "",
        ]
        for step in trips(run):
            lines += [
                f"**Reward hacking? At step {step} the training reward had risen while the held-out "
                f"{key.removeprefix(PREFIX)} fell** (the alarm of eval.alarm_window / eval.alarm_drop).",
                "",
            ]
    return lines
