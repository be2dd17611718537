"""`grpo-cli report` and its library on two synthetic runs: a finished GRPO run and a PPO run still training."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from grpo_cli.commands.report import report
from grpo_cli.errors import UserError
from grpo_cli.report import load_metrics, load_run, load_runs, plot, summarize, write_report

GRPO_LABEL = "grpo-run (GRPO)"
PPO_LABEL = "ppo-run (PPO)"


def _write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


@pytest.fixture
def grpo_run(tmp_path: Path) -> Path:
    """40 steps, finished. Best reward 0.9 at step 30, last 0.4; learning_rate logged but always null."""
    run = tmp_path / "grpo-run"
    run.mkdir()
    rows = [
        {
            "step": step,
            "time": 3.0 * step,
            "reward": 0.9 if step == 30 else round(step / 100, 4),
            "reward_std": 0.1,
            "rewards/accuracy": round(step / 200, 4),
            "rewards/accuracy/std": 0.2,  # a statistic of a panel, not a panel of its own
            "rewards/format": 0.5,
            "kl": round(0.001 * step, 4),
            "loss": 0.01,
            "completion_length": 20 + step,
            "learning_rate": None,
        }
        for step in range(1, 41)
    ]
    _write_jsonl(run / "metrics.jsonl", rows)
    (run / "recipe.yaml").write_text("algorithm: grpo\noutput_dir: grpo-run\ntrainer:\n  max_steps: 40\n")
    summary = {
        "algorithm": "grpo",
        "steps": 40,
        "wall_time_s": 125.0,
        "first_reward": 0.01,
        "last_reward": 0.4,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def ppo_run(tmp_path: Path) -> Path:
    """10 steps of 100 and a half-written 11th line; no summary.json. No loss, no rewards/format."""
    run = tmp_path / "ppo-run"
    run.mkdir()
    rows = [
        {
            "step": step,
            "time": 1.5 * step,
            "reward": round(0.05 * step, 4),
            "rewards/accuracy": round(0.04 * step, 4),
            "kl": round(0.002 * step, 4),
            "completion_length": 30,
            "val/value_loss": 0.3,  # algorithm-specific: ignored
        }
        for step in range(1, 11)
    ]
    _write_jsonl(run / "metrics.jsonl", rows, tail='{"step": 11, "time": 16.5, "rew')
    (run / "recipe.yaml").write_text("algorithm: ppo\noutput_dir: ppo-run\ntrainer:\n  max_steps: 100\n")
    return run


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for grpo-cli's app: the callback makes `report` a subcommand, as there."""

    app.command()(report)
    return app


def test_partial_last_line_is_skipped(ppo_run: Path):
    metrics = load_metrics(ppo_run)
    assert [row["step"] for row in metrics] == list(range(1, 11))


def test_corrupt_line_before_the_last_is_an_error(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "rew\n{"step": 3}\n')
    with pytest.raises(UserError, match="line 2"):
        load_metrics(tmp_path)


def test_resumed_run_keeps_the_later_line_of_a_step(tmp_path: Path):
    rows = [{"step": s, "reward": 0.0} for s in (1, 2, 3)] + [{"step": s, "reward": 1.0} for s in (2, 3, 4)]
    _write_jsonl(tmp_path / "metrics.jsonl", rows)
    metrics = load_metrics(tmp_path)
    assert [(row["step"], row["reward"]) for row in metrics] == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 1.0)]


def test_missing_run_dir_names_the_path(tmp_path: Path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(UserError, match=r"no-such-run does not exist"):
        load_metrics(missing)


def test_directory_without_metrics_is_an_error(tmp_path: Path):
    with pytest.raises(UserError, match=r"has no metrics\.jsonl"):
        load_run(tmp_path)


def test_summaries(grpo_run: Path, ppo_run: Path):
    grpo = summarize(load_run(grpo_run))
    assert grpo.label == GRPO_LABEL
    assert grpo.finished
    assert (grpo.steps, grpo.wall_time_s) == (40, 125.0)  # from summary.json
    assert grpo.first_reward == (1, 0.01)
    assert grpo.last_reward == (40, 0.4)
    assert grpo.best_reward == (30, 0.9)
    assert grpo.final_kl == 0.04

    ppo = summarize(load_run(ppo_run))
    assert ppo.label == PPO_LABEL
    assert not ppo.finished
    assert (ppo.steps, ppo.max_steps, ppo.wall_time_s) == (10, 100, 15.0)  # from the log
    assert ppo.first_reward == (1, 0.05)
    assert ppo.best_reward == ppo.last_reward == (10, 0.5)
    assert ppo.final_kl == 0.02
    assert dict(ppo.rows())["Steps"] == "10 of 100"


def test_plot_draws_each_logged_series_and_nothing_else(grpo_run: Path, ppo_run: Path, tmp_path: Path):
    out = tmp_path / "plots"
    out.mkdir()
    plots = plot(load_runs([grpo_run, ppo_run]), out)

    both = [GRPO_LABEL, PPO_LABEL]
    assert {p.key: p.runs for p in plots} == {
        "reward": both,
        "rewards/accuracy": both,
        "rewards/format": [GRPO_LABEL],
        "kl": both,
        "loss": [GRPO_LABEL],
        "completion_length": both,
    }
    # learning_rate: only nulls in one run, absent from the other: no figure, not even an empty one.
    assert sorted(path.name for path in out.iterdir()) == sorted(p.path.name for p in plots)
    assert not (out / "learning_rate.png").exists()
    assert (out / "rewards_accuracy.png").exists()

    for p in plots:
        with Image.open(p.path) as image:
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 300
            # Lines, text and a legend, not a blank canvas.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_command_writes_report_and_prints_summary(grpo_run: Path, ppo_run: Path):
    result = CliRunner().invoke(_app(), ["report", str(grpo_run), str(ppo_run)])
    assert result.exit_code == 0, result.output

    out = grpo_run / "report"  # the default: beside the first run
    report_md = out / "report.md"
    assert str(report_md) in result.output
    for text in (GRPO_LABEL, PPO_LABEL, "in progress", "finished", "0.9 (step 30)", "2m 05s"):
        assert text in result.output

    markdown = report_md.read_text()
    for name in ("reward", "rewards_accuracy", "rewards_format", "kl", "loss", "completion_length"):
        assert f"]({name}.png)" in markdown
        assert (out / f"{name}.png").is_file()
    assert "learning_rate" not in markdown.lower().replace(" ", "_")

    grpo_section, ppo_section = markdown.split(f"## {PPO_LABEL}")
    for row in (
        "| Status | finished |",
        "| Steps | 40 |",
        "| Wall time | 2m 05s |",
        "| First reward | 0.01 (step 1) |",
        "| Last reward | 0.4 (step 40) |",
        "| Best reward | 0.9 (step 30) |",
        "| Final KL | 0.04 |",
    ):
        assert row in grpo_section
    for row in (
        "| Status | in progress |",
        "| Steps | 10 of 100 |",
        "| Wall time | 15.0s |",
        "| First reward | 0.05 (step 1) |",
        "| Best reward | 0.5 (step 10) |",
        "| Final KL | 0.02 |",
    ):
        assert row in ppo_section
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_command_output_option(grpo_run: Path, tmp_path: Path):
    out = tmp_path / "reports" / "grpo"
    result = CliRunner().invoke(_app(), ["report", str(grpo_run), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file()
    assert not (grpo_run / "report").exists()


def test_command_missing_run_dir_raises_user_error(grpo_run: Path, tmp_path: Path):
    missing = tmp_path / "typo-run"
    result = CliRunner().invoke(_app(), ["report", str(grpo_run), str(missing)])
    assert isinstance(result.exception, UserError)
    assert str(missing) in str(result.exception)
    assert not (grpo_run / "report").exists()  # nothing written before every run was read


def test_output_that_is_a_file_is_an_error(grpo_run: Path, tmp_path: Path):
    occupied = tmp_path / "report.txt"
    occupied.write_text("mine")
    with pytest.raises(UserError, match=r"report\.txt"):
        write_report([grpo_run], occupied)
    assert occupied.read_text() == "mine"


def test_no_step_logged_yet_is_an_error(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "rew')  # the first line, still being written
    with pytest.raises(UserError, match="no training step has been logged yet"):
        write_report([tmp_path])


def test_help_describes_the_command():
    result = CliRunner().invoke(_app(), ["report", "--help"])
    assert result.exit_code == 0
    assert "RUN_DIR" in result.output and "--output" in result.output


def test_importing_the_command_loads_no_plotting_library():
    code = "import sys, grpo_cli.commands.report; print(sorted({'matplotlib', 'rich', 'torch', 'trl'} & set(sys.modules)))"
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


SFT_LABEL = "sft-run (SFT)"


@pytest.fixture
def sft_run(tmp_path: Path) -> Path:
    """5 finished SFT steps, loss 7 down to 3 (RL losses are near 0), a constant learning rate of 2e-4."""
    run = tmp_path / "sft-run"
    run.mkdir()
    rows = [
        {"step": s, "time": float(s), "loss": 8.0 - s, "token_accuracy": s / 10, "learning_rate": 2e-4}
        for s in range(1, 6)
    ]
    _write_jsonl(run / "metrics.jsonl", rows)
    (run / "recipe.yaml").write_text("algorithm: sft\noutput_dir: sft-run\ntrainer:\n  max_steps: 5\n")
    (run / "summary.json").write_text(json.dumps({"algorithm": "sft", "steps": 5, "wall_time_s": 5.0}))
    return run


def test_losses_of_different_kinds_get_panels_of_their_own(
    sft_run: Path, grpo_run: Path, ppo_run: Path, tmp_path
):
    # An SFT loss of 2-7 on the axis of a GRPO loss near 0 flattened the GRPO line to nothing.
    plots = {p.key: p for p in plot(load_runs([sft_run, grpo_run, ppo_run]), tmp_path)}
    assert plots["loss"].panels == ((SFT_LABEL,), (GRPO_LABEL,))
    assert plots["loss"].runs == [SFT_LABEL, GRPO_LABEL]
    # A series that one kind logs keeps one panel.
    assert plots["kl"].panels == ((GRPO_LABEL, PPO_LABEL),)


def test_a_constant_learning_rate_is_said_not_drawn(sft_run: Path, grpo_run: Path, tmp_path: Path):
    decaying = tmp_path / "decaying"
    decaying.mkdir()
    rows = [
        {"step": s, "time": float(s), "reward": 0.1, "learning_rate": 1e-5 * (4 - s) / 3} for s in (1, 2, 3)
    ]
    _write_jsonl(decaying / "metrics.jsonl", rows)
    (decaying / "recipe.yaml").write_text("algorithm: grpo\noutput_dir: decaying\n")

    report_ = write_report([sft_run, grpo_run], tmp_path / "flat")
    assert "learning_rate" not in {p.key for p in report_.plots}
    assert not (tmp_path / "flat" / "learning_rate.png").exists()
    markdown = report_.path.read_text()
    sft_section, grpo_section = markdown.split(f"## {GRPO_LABEL}")
    assert "| Learning rate | 0.0002 (constant) |" in sft_section
    assert "Learning rate" not in grpo_section  # logged as null throughout: nothing to say

    report_ = write_report([sft_run, decaying], tmp_path / "mixed")
    (lr,) = [p for p in report_.plots if p.key == "learning_rate"]
    assert lr.runs == ["decaying (GRPO)"]  # the constant one is a row of the table, not a flat line
    assert "| Learning rate | 1e-05 -> 3.333e-06 |" in report_.path.read_text()


def test_step_ticks_are_whole_numbers(sft_run: Path):
    from grpo_cli.report import LATER_SERIES, figure_for

    (loss,) = [series for series in LATER_SERIES if series.key == "loss"]
    figure = figure_for(loss, load_runs([sft_run]))  # 5 steps: matplotlib's own ticks were 1.0, 1.5, 2.0, ...
    figure.canvas.draw()
    (axes,) = figure.axes
    low, high = axes.get_xlim()
    ticks = [t for t in axes.get_xticks() if low <= t <= high]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


EVAL_JSON = {
    "settings": {
        "num_prompts": 100,
        "num_samples": 1,
        "decoding": "greedy",
        "trainer_state": {"global_step": 40},
    },
    "metrics": {
        "tuned": {"reward": 0.92, "rewards/accuracy/pass@1": 0.92},
        "base": {"reward": 0.75, "rewards/accuracy/pass@1": 0.75},
        "delta": {"reward": 0.17, "rewards/accuracy/pass@1": 0.17},
    },
    "created_at": "2026-12-02T13:41:22+0000",
}


def test_report_includes_the_runs_eval_results(grpo_run: Path, ppo_run: Path):
    (grpo_run / "eval").mkdir()
    (grpo_run / "eval" / "eval.json").write_text(json.dumps(EVAL_JSON))
    markdown = write_report([grpo_run, ppo_run]).path.read_text()
    grpo_section, ppo_section = markdown.split(f"## {PPO_LABEL}")
    assert (
        "`grpo-cli eval` on 100 held-out prompts x 1 (greedy) at step 40, 2026-12-02T13:41:22+0000:"
        in grpo_section
    )
    assert "| metric | tuned | base | delta |" in grpo_section
    assert "| reward | 0.920 | 0.750 | +0.170 |" in grpo_section
    assert "| rewards/accuracy/pass@1 | 0.920 | 0.750 | +0.170 |" in grpo_section
    assert "Evaluation" not in ppo_section


def test_a_damaged_eval_result_is_left_out_with_a_warning(grpo_run: Path, capsys):
    (grpo_run / "eval").mkdir()
    (grpo_run / "eval" / "eval.json").write_text("{not json")
    markdown = write_report([grpo_run]).path.read_text()
    assert "Evaluation" not in markdown
    assert "eval.json" in capsys.readouterr().err


def test_a_reward_models_eval_is_over_pairs(grpo_run: Path):
    pairs = {
        "settings": {"kind": "pairs", "num_prompts": 50},
        "metrics": {"tuned": {"pairwise_accuracy": 0.9, "margin": 1.5}},
    }
    (grpo_run / "eval").mkdir()
    (grpo_run / "eval" / "eval.json").write_text(json.dumps(pairs))
    markdown = write_report([grpo_run]).path.read_text()
    assert "`grpo-cli eval` on 50 held-out preference pairs:" in markdown
    assert "| pairwise_accuracy | 0.900 |" in markdown


def test_tool_metrics_get_panels(tmp_path: Path):
    """TRL's `tools/<metric>` series are drawn; grpo-cli's per-tool counts (`tools/<name>/calls`) are not."""
    run = tmp_path / "tool-run"
    run.mkdir()
    rows = [
        {"step": s, "reward": 0.1 * s, "tools/call_frequency": 1.0, "tools/failure_frequency": 0.5 / s}
        | {"tools/add/calls": 2.0, "tools/add/failures": 1.0}
        for s in (1, 2, 3)
    ]
    _write_jsonl(run / "metrics.jsonl", rows)
    out = tmp_path / "plots"
    out.mkdir()
    plots = plot(load_runs([run]), out)
    assert [p.key for p in plots] == ["reward", "tools/call_frequency", "tools/failure_frequency"]
    assert [p.path.name for p in plots][1:] == ["tools_call_frequency.png", "tools_failure_frequency.png"]
