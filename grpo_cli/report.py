"""Plots and a markdown summary from the metrics log of one or more runs (`grpo-cli report`).

A run directory holds `metrics.jsonl` (one JSON object per logged step, appended while the run trains),
`recipe.yaml` (the resolved recipe) and, once training has finished, `summary.json`; `runs` reads them. A report
can be made of a run still in progress: a half-written last line of the log is skipped and a missing
`summary.json` reads as "in progress". A run's `eval/eval.json` (what `grpo-cli eval` measured last) is shown with it.

matplotlib is imported inside `plot` only: `grpo-cli --help` must not pay for it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_cli import manifest, report_heldout
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.errors import UserError
from grpo_cli.eval_markdown import eval_markdown
from grpo_cli.output import warn_once
from grpo_cli.run_files import (
    METRICS_FILE,
    atomic_write,
    read_eval_report,
    read_marker,
    read_metrics,
    read_recipe,
    read_summary,
    run_algorithm,
)

REPORT_FILE = "report.md"
REWARD_PREFIX = "rewards/"
TOOLS_PREFIX = "tools/"  # TRL's tool metrics (call_frequency, failure_frequency) and grpo-cli's per tool

# A series with at least this many points gets a moving average drawn over its (faded) raw values.
SMOOTH_MIN_POINTS = 30


@dataclass(frozen=True)
class Series:
    """One metric of the log, drawn as one figure."""

    key: str
    title: str
    ylabel: str
    # A schedule (the learning rate) is not noisy: averaging it would only blur its corners. A run that holds it
    # constant gets no line (a flat line says less than the number): the run's summary states it instead.
    schedule: bool = False


TOTAL_REWARD = Series("reward", "Total reward", "mean weighted reward")
# Drawn after the total reward and the `rewards/<name>` panels, in this order.
LATER_SERIES = (
    Series("kl", "KL divergence to the reference model", "KL"),
    Series("loss", "Loss", "loss"),
    Series("completion_length", "Completion length", "mean tokens"),
    Series("learning_rate", "Learning rate", "learning rate", schedule=True),
    # SFT and reward-model stages (see run_files.METRIC_NAMES), so a pipeline's stages overlay in one report.
    Series("token_accuracy", "SFT: next-token accuracy on the targets", "share of tokens"),
    Series("pairwise_accuracy", "Reward model: chosen scored above rejected", "share of pairs"),
    Series("margin", "Reward model: score of chosen minus rejected", "mean margin"),
)


@dataclass
class Run:
    """A run directory as read from disk."""

    path: Path
    metrics: list[dict[str, Any]]
    algorithm: str | None  # "grpo" | "ppo", from recipe.yaml (or summary.json); None if neither says
    summary: dict[str, Any] | None  # summary.json; None while the run is in progress
    max_steps: int | None  # trainer.max_steps of the recipe, when it sets one
    label: str  # how legends and headings name the run: "<directory name> (<ALGORITHM>)"


@dataclass(frozen=True)
class RunSummary:
    """The numbers of one run that report.md and the command's table show."""

    label: str
    path: Path
    finished: bool
    steps: int  # the last step logged, or summary.json's count once finished
    max_steps: int | None
    wall_time_s: float | None
    first_reward: tuple[int, float] | None  # (step, value)
    last_reward: tuple[int, float] | None
    best_reward: tuple[int, float] | None
    final_kl: float | None
    learning_rate: tuple[float, float] | None = None  # (first, last) logged, when the run logged one
    evaluation: dict[str, Any] | None = None  # eval/eval.json, what `grpo-cli eval` measured last

    @property
    def constant_learning_rate(self) -> bool:
        return self.learning_rate is not None and self.learning_rate[0] == self.learning_rate[1]

    def rows(self) -> list[tuple[str, str]]:
        """(name, formatted value) pairs, the one place where the report's numbers are formatted."""
        steps = str(self.steps)
        if not self.finished and self.max_steps:
            steps = f"{self.steps} of {self.max_steps}"
        rows = [
            ("Status", "finished" if self.finished else "in progress"),
            ("Steps", steps),
            ("Wall time", format_duration(self.wall_time_s)),
            ("First reward", _format_point(self.first_reward)),
            ("Last reward", _format_point(self.last_reward)),
            ("Best reward", _format_point(self.best_reward)),
            ("Final KL", format_number(self.final_kl)),
        ]
        if self.learning_rate is not None:
            first, last = self.learning_rate
            if self.constant_learning_rate:
                rows.append(("Learning rate", f"{format_number(first)} (constant)"))
            else:
                rows.append(("Learning rate", f"{format_number(first)} -> {format_number(last)}"))
        return rows


@dataclass(frozen=True)
class Plot:
    """One figure written by `plot`: which metric, where, and the labels of the runs drawn in it."""

    key: str
    title: str
    path: Path
    runs: list[str]
    # The runs of each panel, one panel per kind of training (RL, SFT, reward model) that logged the metric: an SFT
    # loss of 2-7 on the axis of a GRPO loss near 0 flattened the GRPO line to nothing.
    panels: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote: report.md, the numbers in it and its figures."""

    path: Path
    summaries: list[RunSummary]
    plots: list[Plot]


def load_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged steps of a run (`run_files.read_metrics`), or a UserError when `run_dir` is not a run's directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise UserError(f"run directory {run_dir} {what}: give the output_dir of a training run")
    if not (run_dir / METRICS_FILE).is_file():
        raise UserError(f"{run_dir} has no {METRICS_FILE}: is it the output_dir of a grpo-cli training run?")
    return read_metrics(run_dir)


def load_run(run_dir: Path) -> Run:
    """Read a run directory: its metrics log, and what recipe.yaml and summary.json say when present."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    recipe = read_recipe(run_dir) or {}
    summary = read_summary(run_dir)
    algorithm = run_algorithm(run_dir)
    trainer = recipe.get("trainer")
    max_steps = trainer.get("max_steps") if isinstance(trainer, dict) else None
    name = run_dir.resolve().name
    return Run(
        path=run_dir,
        metrics=metrics,
        algorithm=algorithm,
        summary=summary,
        max_steps=int(max_steps) if _is_number(max_steps) and max_steps > 0 else None,
        label=f"{name} ({algorithm.upper()})" if algorithm else name,
    )


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    """`load_run` for each directory; runs whose labels would clash are labelled by their path instead."""
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = run.label.replace(run.path.resolve().name, str(run.path), 1)
    return runs


def summarize(run: Run) -> RunSummary:
    """The headline numbers of a run, from its log (and summary.json for its step count and wall time)."""
    summary = run.summary or {}
    reward = _points(run.metrics, TOTAL_REWARD.key)
    kl = _points(run.metrics, "kl")
    times = _points(run.metrics, "time")
    steps = summary.get("steps")
    wall_time = summary.get("wall_time_s")
    learning_rate = _points(run.metrics, "learning_rate")
    return RunSummary(
        label=run.label,
        path=run.path.resolve(),
        finished=run.summary is not None,
        steps=int(steps) if _is_number(steps) else (run.metrics[-1]["step"] if run.metrics else 0),
        max_steps=run.max_steps,
        wall_time_s=wall_time if _is_number(wall_time) else (times[-1][1] if times else None),
        first_reward=reward[0] if reward else None,
        last_reward=reward[-1] if reward else None,
        # The first of equal maxima, so the step shown is when the best was reached.
        best_reward=max(reward, key=lambda point: point[1]) if reward else None,
        final_kl=kl[-1][1] if kl else None,
        learning_rate=(learning_rate[0][1], learning_rate[-1][1]) if learning_rate else None,
        evaluation=_evaluation(run.path),
    )


def _evaluation(run_dir: Path) -> dict[str, Any] | None:
    try:
        return read_eval_report(run_dir)
    except UserError as err:  # a damaged eval result must not cost the user the rest of the report
        warn_once(f"{err}; the report leaves its eval results out")
        return None


def plot(runs: Sequence[Run], output: Path) -> list[Plot]:
    """Draw one PNG per metric into `output`, every run a line of it, and return what was drawn.

    A metric that no run logged gets no figure. A run keeps its colour in every figure, also where another
    run has no line.
    """
    plots: list[Plot] = []
    taken: set[str] = set()
    for series in _series_to_draw(runs):
        panels = _panels(series, runs)
        if not panels:
            continue
        figure = figure_for(series, runs)
        path = output / _file_name(series.key, taken)
        atomic_write(path, lambda f, figure=figure: figure.savefig(f, format="png"))
        labels = tuple(tuple(run.label for run, _ in lines) for lines in panels)
        plots.append(
            Plot(series.key, series.title, path, [label for panel in labels for label in panel], labels)
        )
    return plots


def figure_for(series: Series, runs: Sequence[Run]):
    """The matplotlib Figure of one metric: a panel per kind of training that logged it, a line per run (its
    colour its place in `runs`), whole steps on the x axis. None when no run has a point to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = _panels(series, runs)
    if not panels:
        return None
    colours = {id(run): f"C{i % 10}" for i, run in enumerate(runs)}
    # The object-oriented API, not pyplot: no global figure registry to leak into, no backend to switch.
    figure = Figure(figsize=(max(7, 5 * len(panels)), 4), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    for number, lines in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), number)
        for run, points in lines:
            steps = [step for step, _ in points]
            values = [value for _, value in points]
            colour = colours[id(run)]
            if not series.schedule and len(points) >= SMOOTH_MIN_POINTS:
                axes.plot(steps, values, color=colour, alpha=0.25, linewidth=1)
                axes.plot(steps, _moving_average(values), color=colour, linewidth=2, label=run.label)
            else:
                # Markers where points are few, so that a run with a single logged step still shows.
                marker = "o" if len(points) < SMOOTH_MIN_POINTS else None
                axes.plot(
                    steps, values, color=colour, linewidth=1.5, marker=marker, markersize=3, label=run.label
                )
        if len(panels) > 1:
            algorithms = dict.fromkeys(run.algorithm.upper() for run, _ in lines if run.algorithm)
            axes.set_title(", ".join(algorithms) or "other")
        else:
            axes.set_title(series.title)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at step 1.5
        axes.set_xlabel("step")
        axes.set_ylabel(series.ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    if len(panels) > 1:
        figure.suptitle(series.title)
    return figure


def _panels(series: Series, runs: Sequence[Run]) -> list[list[tuple[Run, list[tuple[int, float]]]]]:
    """The (run, points) lines of a figure, grouped into panels by what the run learns from (the algorithm
    table's `learns_from`), in the order of `runs`. Runs with nothing to draw are left out: no points, or, for a
    schedule, the same value at every step."""
    groups: dict[str | None, list[tuple[Run, list[tuple[int, float]]]]] = {}
    for run in runs:
        points = _points(run.metrics, series.key)
        if not points or (series.schedule and len({value for _, value in points}) == 1):
            continue
        algorithm = ALGORITHMS.get(run.algorithm)
        groups.setdefault(algorithm.learns_from if algorithm else None, []).append((run, points))
    return list(groups.values())


def write_report(run_dirs: Sequence[Path], output: Path | None = None) -> Report:
    """Write report.md and its PNG plots for the given runs into `output` (default: `<first run>/report`)."""
    if not run_dirs:
        raise UserError("give at least one run directory")
    runs = load_runs(run_dirs)
    if not any(run.metrics for run in runs):
        names = ", ".join(str(run.path) for run in runs)
        raise UserError(f"no training step has been logged yet in {names}: try again after the first one")
    output = Path(output) if output is not None else Path(run_dirs[0]) / "report"
    if output.exists() and not output.is_dir():
        raise UserError(f"cannot write the report to {output}: it is a file, give a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the report directory {output}: {e.strerror}") from e

    plots = plot(runs, output)
    if held_out := report_heldout.plot(runs, output):  # first: where a reader looks for reward hacking
        plots.insert(0, Plot(*held_out[:3], list(held_out[3]), (held_out[3],)))
    summaries = [summarize(run) for run in runs]
    path = output / REPORT_FILE
    text = _markdown(summaries, plots, output, report_heldout.markdown(runs))
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return Report(path, summaries, plots)


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _format_point(point: tuple[int, float] | None) -> str:
    return "n/a" if point is None else f"{format_number(point[1])} (step {point[0]})"


def _markdown(summaries: list[RunSummary], plots: list[Plot], output: Path, held_out: list[str]) -> str:
    lines = ["# Training report", ""]
    for summary in summaries:
        lines += [f"## {summary.label}", "", f"`{summary.path}`", "", "| | |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in summary.rows()]
        lines.append("")
        if summary.evaluation:
            lines += eval_markdown(summary.evaluation)
        lines += manifest.markdown((read_marker(summary.path) or {}).get("manifest"), "### Reproducibility")
    lines += held_out
    if plots:
        lines += [
            "## Plots",
            "",
            "Where a run logged many steps, the bold line is a moving average and the faint one the raw values.",
            "",
        ]
    for figure in plots:
        relative = Path(os.path.relpath(figure.path, output)).as_posix()
        lines += [f"### {figure.title}", "", f"![{figure.title}]({relative})", ""]
    return "\n".join(lines)


def _series_to_draw(runs: Sequence[Run]) -> list[Series]:
    # `rewards/<name>` and `tools/<metric>` only: deeper keys (`rewards/<name>/std`, `tools/<name>/calls`) are
    # statistics of a panel, or stay in metrics.jsonl.
    def top_keys(prefix: str) -> list[str]:
        keys = (key for run in runs for row in run.metrics for key in row if key.startswith(prefix))
        return list(dict.fromkeys(key for key in keys if "/" not in key[len(prefix) :]))

    per_function = [
        Series(k, f"Reward: {k[len(REWARD_PREFIX) :]}", "mean score") for k in top_keys(REWARD_PREFIX)
    ]
    tools = [
        Series(k, f"Tools: {k[len(TOOLS_PREFIX) :].replace('_', ' ')}", "per completion")
        for k in top_keys(TOOLS_PREFIX)
    ]
    return [TOTAL_REWARD, *per_function, *tools, *LATER_SERIES]


def _points(metrics: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) for every logged step where `key` holds a finite number (null, NaN and absent skipped)."""
    return [(row["step"], float(row[key])) for row in metrics if _is_number(row.get(key))]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _moving_average(values: list[float]) -> list[float]:
    """Centred moving average over about a twentieth of the points; the window shrinks at both ends."""
    half = max(2, len(values) // 40)
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    averaged = []
    for i in range(len(values)):
        low, high = max(0, i - half), min(len(values), i + half + 1)
        averaged.append((prefix[high] - prefix[low]) / (high - low))
    return averaged


def _file_name(key: str, taken: set[str]) -> str:
    """A PNG name from a metric key (`rewards/accuracy` -> `rewards_accuracy.png`), unique among `taken`."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_.") or "series"
    name, n = f"{stem}.png", 2
    while name in taken:
        name, n = f"{stem}_{n}.png", n + 1
    taken.add(name)
    return name
