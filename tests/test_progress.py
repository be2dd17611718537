"""What a run shows while it trains: a live bar in a terminal, plain lines elsewhere (issue 22, items 9 and 10),
each with the metrics that say whether its algorithm learns."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from tests.helpers import TINY_RECIPE

# `step 3/20: reward 0.412, 0.52 step/s, ETA 0:00:33`
LINE = r"step (\d+)/(\d+): {metrics}, \d+\.\d\d step/s, ETA (\d+:\d\d:\d\d|-)"
NUMBER = r"(\d+\.\d{3}|-)"


def line_pattern(*metrics: str) -> re.Pattern:
    return re.compile(LINE.format(metrics=", ".join(f"{m} {NUMBER}" for m in metrics)))


@pytest.mark.parametrize(
    ("algorithm", "columns"),
    [
        ("grpo", ("reward",)),
        ("ppo", ("reward",)),
        ("sft", ("loss", "token_accuracy")),
        ("reward", ("loss", "pairwise_accuracy")),
    ],
)
def test_the_progress_shows_what_each_algorithm_learns(algorithm, columns):
    from grpo_cli.callbacks import progress_metrics

    assert progress_metrics(algorithm) == columns


def test_every_kind_of_learning_has_its_progress_metrics():
    import typing

    from grpo_cli.algorithms.table import Algorithm
    from grpo_cli.callbacks import PROGRESS_METRICS
    from grpo_cli.run_files import METRIC_NAMES

    kinds = typing.get_args(typing.get_type_hints(Algorithm)["learns_from"])
    assert set(PROGRESS_METRICS) == set(kinds)
    assert {m for names in PROGRESS_METRICS.values() for m in names} <= set(METRIC_NAMES.values())


def simulate(
    tmp_path, monkeypatch, *, algorithm: str, steps: int, logs, stream=None, clock_step: float = 0.01
):
    """Drive a RunLogger as transformers' Trainer does (step end, then its log) for `steps` steps, on a fake clock;
    returns what it wrote to stderr."""
    from grpo_cli import callbacks

    stream = stream if stream is not None else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    args = SimpleNamespace(logging_steps=1, logging_strategy="steps", logging_first_step=False)
    state = SimpleNamespace(global_step=0, max_steps=steps, is_world_process_zero=True)
    control = SimpleNamespace()
    logger = callbacks.RunLogger(tmp_path, algorithm=algorithm)
    logger.on_train_begin(args, state, control)
    for step in range(1, steps + 1):
        now[0] += clock_step
        state.global_step = step
        logger.on_step_end(args, state, control)
        logger.on_log(args, state, control, logs=logs(step))
    logger.on_train_end(args, state, control)
    return stream.getvalue()


def test_without_a_terminal_a_plain_line_every_tenth_of_the_run(tmp_path, monkeypatch):
    err = simulate(tmp_path, monkeypatch, algorithm="grpo", steps=100, logs=lambda s: {"reward": s / 100})
    lines = err.splitlines()
    assert len(lines) == 10
    pattern = line_pattern("reward")
    for line, step in zip(lines, range(10, 101, 10), strict=True):
        found = pattern.fullmatch(line)
        assert found, line
        assert found.groups()[:3] == (str(step), "100", f"{step / 100:.3f}")  # the step's own metric
    assert lines[-1].endswith("100.00 step/s, ETA 0:00:00")


def test_a_slow_run_gets_a_line_every_30_seconds_but_never_two_for_a_step(tmp_path, monkeypatch):
    err = simulate(
        tmp_path, monkeypatch, algorithm="grpo", steps=100, logs=lambda s: {"reward": 0.5}, clock_step=45.0
    )
    lines = err.splitlines()
    assert [int(line_pattern("reward").fullmatch(line)[1]) for line in lines] == list(range(1, 101))
    assert lines[0] == "step 1/100: reward 0.500, 0.02 step/s, ETA 1:14:15"


def test_sft_and_reward_runs_show_loss_and_accuracy_not_reward(tmp_path, monkeypatch):
    sft = simulate(
        tmp_path,
        monkeypatch,
        algorithm="sft",
        steps=2,
        logs=lambda s: {"loss": 2.5, "mean_token_accuracy": 0.25},
    )
    assert sft.splitlines()[-1] == "step 2/2: loss 2.500, token_accuracy 0.250, 100.00 step/s, ETA 0:00:00"
    pairs = simulate(
        tmp_path, monkeypatch, algorithm="reward", steps=2, logs=lambda s: {"loss": 0.7, "accuracy": 0.5}
    )
    assert (
        pairs.splitlines()[-1] == "step 2/2: loss 0.700, pairwise_accuracy 0.500, 100.00 step/s, ETA 0:00:00"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_keeps_the_live_bar_with_the_algorithms_columns(tmp_path, monkeypatch):
    err = simulate(
        tmp_path,
        monkeypatch,
        algorithm="sft",
        steps=3,
        logs=lambda s: {"loss": 1.25, "mean_token_accuracy": 0.5},
        stream=Terminal(),
    )
    assert not line_pattern("loss", "token_accuracy").search(err)
    assert "training" in err and "3/3" in err
    assert "loss 1.250" in err and "token_accuracy 0.500" in err and "reward" not in err


@pytest.mark.slow
def test_a_tiny_runs_stderr_without_a_terminal_has_bounded_progress_lines(cli, tiny_recipe):
    result = cli("train", tiny_recipe({"trainer": {"max_steps": 20, "save_steps": 20}}))
    assert result.exit_code == 0, result.output
    pattern = line_pattern("reward")
    lines = [m for m in map(pattern.fullmatch, result.stderr.splitlines()) if m]
    assert 10 <= len(lines) <= 20  # every other step (a tenth of 20), more only for a slow step
    assert [int(m[1]) for m in lines] == sorted({int(m[1]) for m in lines})
    assert lines[-1][1] == "20" and lines[-1][4] == "0:00:00"
    assert all(m[3] != "-" for m in lines)


@pytest.mark.slow
def test_a_tiny_sft_run_shows_its_loss_and_token_accuracy(cli, tmp_path):
    import yaml

    sft = {
        **TINY_RECIPE,
        "algorithm": "sft",
        "lora": None,
        "rewards": [],
        "dataset": {**TINY_RECIPE["dataset"], "completion": "{answer}"},
        "trainer": {"max_steps": 2, "per_device_train_batch_size": 8},
        "output_dir": str(tmp_path / "runs" / "sft"),
    }
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump(sft))
    result = cli("train", recipe)
    assert result.exit_code == 0, result.output
    lines = [
        m for m in map(line_pattern("loss", "token_accuracy").fullmatch, result.stderr.splitlines()) if m
    ]
    assert [m[1] for m in lines] == ["1", "2"]
    assert "reward -" not in result.stderr


# ---- the line a run ends with (issue 22, item 16) ----


def summary(**fields) -> dict:
    return {
        "steps": 20,
        "wall_time_s": 13.4,
        "first_reward": 0.274,
        "last_reward": 0.464,
        "first_mean_reward": 0.2434,
        "last_mean_reward": 0.2281,
        "mean_reward_window": 4,
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {},
            "done: 20 steps in 13 s, reward 0.243 -> 0.228 (means of the first and last 4 steps); wrote runs/x",
        ),
        (
            {"steps": 1, "first_mean_reward": 0.25, "last_mean_reward": 0.25, "mean_reward_window": 1},
            "done: 1 step in 13 s, reward 0.250 -> 0.250 (the first and last step); wrote runs/x",
        ),
        (  # SFT and reward runs log no reward
            {"first_mean_reward": None, "last_mean_reward": None, "mean_reward_window": None},
            "done: 20 steps in 13 s; wrote runs/x",
        ),
    ],
)
def test_the_done_line_gives_the_windowed_reward_means(capsys, fields, line):
    from pathlib import Path

    from grpo_cli.commands.train import _say_done
    from grpo_cli.workflows.train import Trained

    _say_done(Trained(Path("runs/x"), summary(**fields)))
    assert capsys.readouterr().out == line + "\n"
