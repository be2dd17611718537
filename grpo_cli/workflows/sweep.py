"""A sweep: one recipe trained over the grid of `KEY=V1,V2` overrides, each run in its own directory under one
sweep directory, validated all together before anything trains; finished runs are skipped and interrupted ones
resumed when the sweep runs again; then one report overlays them and a table ranks them.

Each run is a `grpo-cli train` child process (its own memory, its own seeds, its own progress), one after another,
or `parallel` at once with their output in `DIR/logs/` and OMP_WAIT_POLICY=PASSIVE (on a small machine spinning
OpenMP threads of several processes slow each other: BENCHMARKS.md).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli import validation
from grpo_cli.errors import ConfigError, Stop, UserError
from grpo_cli.eval_during_training import held_out_metric
from grpo_cli.output import say
from grpo_cli.recipe import Recipe
from grpo_cli.recipe_files import find_recipe
from grpo_cli.report import write_report
from grpo_cli.run_dir import holds_run, last_complete_checkpoint
from grpo_cli.run_files import read_metrics, read_summary

MAX_RUNS = 64  # a grid past this is a typo (a list pasted where a value was meant) more often than a plan
LOGS = "logs"
REPORT = "report"
# On a sweep's own SIGINT/SIGTERM its children are sent the same signal once: they save and stop as `train` does.
FORWARDED = (signal.SIGINT, signal.SIGTERM)


@dataclass
class SweepRun:
    """One point of the grid: its directory name, its overrides, its output directory and how it ended."""

    name: str
    overrides: list[str]
    output_dir: Path
    status: str = "pending"  # finished before / trained / resumed / failed (exit N)
    exit_code: int | None = None
    wall_time_s: float | None = None
    metric: tuple[str, float] | None = field(default=None)  # (name, value) it is ranked by


def parse_axes(assignments: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """`KEY=V1,V2` -> an axis (KEY, [V1, V2]); `KEY=V` (one value) -> an override every run gets. Commas inside
    brackets or quotes belong to a value (`k=[1,2],[3]` is two values)."""
    axes, fixed, seen = [], [], set()
    for assignment in assignments:
        key, sep, values = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{assignment!r}: write KEY=V1,V2,... (e.g. trainer.learning_rate=1e-3,3e-3)")
        if key in seen:
            raise UserError(f"{key} is given twice; list all its values in one {key}=V1,V2")
        seen.add(key)
        split = [v.strip() for v in _split_values(values)]
        if len(split) > 1 and not all(split):
            raise UserError(f"{assignment!r}: an empty value; write {key}=V1,V2 with no empty item")
        if len(split) == 1:
            fixed.append(assignment)
        else:
            axes.append((key, split))
    if not axes:
        raise UserError(
            "nothing to sweep: give at least one KEY=V1,V2 (e.g. trainer.learning_rate=1e-3,3e-3)"
        )
    size = 1
    for _, values in axes:
        size *= len(values)
    if size > MAX_RUNS:
        raise UserError(
            f"the grid has {size} runs; a sweep runs at most {MAX_RUNS}: sweep fewer values at once"
        )
    return axes, fixed


def _split_values(text: str) -> list[str]:
    values, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    values.append("".join(current))
    return values


def grid(axes: list[tuple[str, list[str]]], directory: Path) -> list[SweepRun]:
    """Every combination, named by its values (`learning_rate=0.001_beta=0.1`: the last part of each key)."""
    runs, taken = [], set()
    for combination in itertools.product(*[[(key, v) for v in values] for key, values in axes]):
        name = "_".join(f"{key.rsplit('.', 1)[-1]}={_safe(value)}" for key, value in combination)
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name}-{n}", n + 1
        taken.add(unique)
        runs.append(SweepRun(unique, [f"{key}={value}" for key, value in combination], directory / unique))
    return runs


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", value).strip("_")[:40] or "value"


def default_directory(recipe: str) -> Path:
    return Path("runs") / f"sweep-{find_recipe(recipe).stem}"


def check(recipe: str, runs: list[SweepRun], overrides: list[str], processes: int | None) -> list[Recipe]:
    """Validate every run of the grid as `validate` does; one ConfigError naming each run's problems."""
    problems, recipes = [], []
    for run in runs:
        try:
            recipes.append(
                validation.validate(
                    recipe, [*overrides, *run.overrides, f"output_dir={run.output_dir}"], processes
                )
            )
        except ConfigError as err:
            problems += [f"{run.name}: {p}" for p in err.problems or [str(err)]]
        except UserError as err:
            problems.append(f"{run.name}: {err}")
    if problems:
        raise ConfigError(find_recipe(recipe).name, list(dict.fromkeys(problems)))
    return recipes


def sweep(
    recipe: str,
    assignments: list[str],
    *,
    directory: Path | None = None,
    parallel: int = 1,
    num_processes: int | None = None,
) -> list[SweepRun]:
    """Train every run of the grid not finished yet (resuming those with a checkpoint), then rank them.

    Returns the runs with how each ended; raises Stop with 130/143 when the sweep was interrupted (its children
    saved and stopped), after saying how to continue."""
    directory = directory or default_directory(recipe)
    axes, overrides = parse_axes(assignments)
    runs = grid(axes, directory)
    recipes = check(recipe, runs, overrides, num_processes)
    directory.mkdir(parents=True, exist_ok=True)
    pending = []
    for run in runs:
        if read_summary(run.output_dir) is not None:
            run.status = "finished before"
        else:
            pending.append(run)
    say(
        f"sweep of {len(runs)} runs into {directory}: {len(runs) - len(pending)} finished before, "
        f"{len(pending)} to train{f', {parallel} at a time' if parallel > 1 and pending else ''}"
    )
    interrupted = _train(recipe, pending, overrides, directory, parallel, num_processes)
    for run, checked in zip(runs, recipes, strict=True):
        run.metric = ranking_metric(run.output_dir, held_out_metric(checked))
    if interrupted is not None:
        say(
            "sweep interrupted; continue with the same command: finished runs are skipped, the others resumed"
        )
        raise Stop(interrupted)
    reported = [run.output_dir for run in runs if (run.output_dir / "metrics.jsonl").is_file()]
    if reported:
        write_report(reported, directory / REPORT)
    return runs


def _command(
    recipe: str, run: SweepRun, overrides: list[str], num_processes: int | None
) -> tuple[list[str], str]:
    """The `grpo-cli train` command line of one run and what it does (train, resume, replace an unsaved start)."""
    args = [
        sys.executable,
        "-m",
        "grpo_cli",
        "train",
        recipe,
        *overrides,
        *run.overrides,
        "-o",
        str(run.output_dir),
    ]
    if num_processes is not None:
        args += ["--num-processes", str(num_processes)]
    if holds_run(run.output_dir):
        if last_complete_checkpoint(run.output_dir) is not None:
            return [*args, "--resume"], "resumed"
        return [*args, "--overwrite"], "trained"  # began, never saved: nothing to continue from
    return args, "trained"


def _train(
    recipe: str,
    pending: list[SweepRun],
    overrides: list[str],
    directory: Path,
    parallel: int,
    processes: int | None,
) -> int | None:
    """Run the pending runs, `parallel` at once; the exit code of the signal that interrupted them, else None."""
    env = dict(os.environ)
    if parallel > 1:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        (directory / LOGS).mkdir(exist_ok=True)
    running: dict[subprocess.Popen, tuple[SweepRun, float, object]] = {}
    queue = list(pending)
    received: list[int] = []

    def forward(signum, _frame):
        if not received:
            received.append(signum)
            for child in running:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        while queue or running:
            while queue and len(running) < parallel and not received:
                run = queue.pop(0)
                args, what = _command(recipe, run, overrides, processes)
                run.status = what
                log = None
                if parallel > 1:
                    log = (directory / LOGS / f"{run.name}.log").open("w")
                    say(f"{run.name}: {what.replace('trained', 'training').replace('resumed', 'resuming')}")
                else:
                    say(f"{run.name}: {' '.join(run.overrides)}")
                # Own session: a Ctrl-C reaches the sweep, which passes it on once (a second one would stop a
                # run without saving).
                child = subprocess.Popen(
                    args,
                    env=env,
                    stdout=log or sys.stderr,  # the sweep's stdout is its table
                    stderr=subprocess.STDOUT if log else None,
                    start_new_session=True,
                )
                running[child] = (run, time.monotonic(), log)
            if not running:
                break
            time.sleep(0.2)
            for child in [c for c in running if c.poll() is not None]:
                run, started, log = running.pop(child)
                if log is not None:
                    log.close()
                run.exit_code, run.wall_time_s = child.returncode, round(time.monotonic() - started, 1)
                if child.returncode != 0:
                    run.status = f"failed (exit {child.returncode})"
                if parallel > 1 or child.returncode != 0:
                    say(f"{run.name}: {run.status} in {run.wall_time_s:.0f} s")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        return 130 if received[0] == signal.SIGINT else 143
    return None


def ranking_metric(run_dir: Path, held_out: str | None = None) -> tuple[str, float] | None:
    """What a run is ranked by: its last held-out evaluation during training (`eval.every`) of `held_out` (the
    metric the reward-hacking alarm watches: the first eval-only reward, else the first reward), else of the total
    reward; without one, its final mean training reward (summary.json)."""
    try:
        rows = read_metrics(run_dir)
        summary = read_summary(run_dir) or {}
    except UserError:
        return None
    for row in reversed(rows):
        evaluated = {k: v for k, v in row.items() if k.startswith("eval/") and isinstance(v, int | float)}
        for key in (held_out, "eval/reward"):
            if key in evaluated:
                return key, float(evaluated[key])
    last = summary.get("last_mean_reward")
    return ("reward (training, last steps)", float(last)) if isinstance(last, int | float) else None


def ranked(runs: list[SweepRun]) -> list[SweepRun]:
    """Best first by their metric (runs without one last, in grid order)."""
    return sorted(runs, key=lambda r: (r.metric is None, -(r.metric[1] if r.metric else 0.0)))
