"""`grpo-cli sweep`: the grid, validated all together, trained run by run, skipped when finished, ranked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_cli.errors import UserError
from grpo_cli.workflows.sweep import SweepRun, grid, parse_axes, ranked, ranking_metric


def test_axes_and_fixed_overrides():
    axes, fixed = parse_axes(["trainer.learning_rate=1e-3,3e-3", "lora.r=4", "trainer.beta=0,0.1"])
    assert axes == [("trainer.learning_rate", ["1e-3", "3e-3"]), ("trainer.beta", ["0", "0.1"])]
    assert fixed == ["lora.r=4"]


def test_commas_inside_brackets_belong_to_a_value():
    axes, _ = parse_axes(["lora.target_modules=[q_proj,v_proj],[q_proj]"])
    assert axes == [("lora.target_modules", ["[q_proj,v_proj]", "[q_proj]"])]


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["lora.r=4"], "nothing to sweep: give at least one KEY=V1,V2"),
        (["trainer.learning_rate"], "write KEY=V1,V2,..."),
        (["a=1,2", "a=3,4"], "a is given twice"),
        (["a=1,,2"], "an empty value"),
        (["a=" + ",".join(map(str, range(9))), "b=" + ",".join(map(str, range(9)))], "the grid has 81 runs"),
    ],
)
def test_bad_grids_are_one_line(assignments, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_axes(assignments)


def test_grid_names_each_run_by_its_values(tmp_path):
    runs = grid([("trainer.learning_rate", ["1e-3", "3e-3"]), ("lora.r", ["4", "8"])], tmp_path)
    assert [r.name for r in runs] == [
        "learning_rate=1e-3_r=4",
        "learning_rate=1e-3_r=8",
        "learning_rate=3e-3_r=4",
        "learning_rate=3e-3_r=8",
    ]
    assert runs[1].overrides == ["trainer.learning_rate=1e-3", "lora.r=8"]
    assert runs[1].output_dir == tmp_path / "learning_rate=1e-3_r=8"


def test_ranked_by_held_out_metric_else_training_reward(tmp_path):
    held_out = tmp_path / "a"
    held_out.mkdir()
    (held_out / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward": 0.9}) + "\n" + json.dumps({"step": 2, "eval/reward": 0.4}) + "\n"
    )
    trained = tmp_path / "b"
    trained.mkdir()
    (trained / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    (trained / "summary.json").write_text(json.dumps({"steps": 1, "last_mean_reward": 0.5}))
    assert ranking_metric(held_out) == ("eval/reward", 0.4)
    (held_out / "metrics.jsonl").write_text(
        json.dumps({"step": 2, "eval/reward": 0.4, "eval/rewards/acc": 0.7})
    )
    assert ranking_metric(held_out, "eval/rewards/acc") == (
        "eval/rewards/acc",
        0.7,
    )  # the alarm's metric first
    assert ranking_metric(trained) == ("reward (training, last steps)", 0.5)
    runs = [SweepRun("a", [], held_out, metric=(ranking_metric(held_out))), SweepRun("c", [], tmp_path / "c")]
    runs.append(SweepRun("b", [], trained, metric=ranking_metric(trained)))
    assert [r.name for r in ranked(runs)] == ["b", "a", "c"]


def test_every_run_is_validated_before_any_trains(tiny_recipe, cli, tmp_path):
    result = cli("sweep", tiny_recipe(), "trainer.learning_rate=0.01,-1", "-o", tmp_path / "sweep")
    assert result.exit_code == 2
    assert "learning_rate=-1: " in result.stderr and "learning_rate" in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_sweep_trains_each_run_reports_and_skips_finished_runs(tiny_recipe, tmp_path):
    recipe = tiny_recipe({"trainer": {"max_steps": 2, "save_steps": 2}})
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "grpo_cli", "sweep", str(recipe), "trainer.learning_rate=0.01,0.05"]
    command += ["-o", str(sweep_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [sweep_dir / "learning_rate=0.01", sweep_dir / "learning_rate=0.05"]
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["steps"] == 2
    import yaml

    assert [yaml.safe_load((r / "recipe.yaml").read_text())["trainer"]["learning_rate"] for r in runs] == [
        0.01,
        0.05,
    ]
    assert (sweep_dir / "report" / "report.md").is_file()
    assert "sweep of 2 runs" in done.stderr and "2 to train" in done.stderr
    table = [line for line in done.stdout.splitlines() if "learning_rate=" in line]
    assert len(table) == 2 and all("trained" in line for line in table)

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 finished before, 0 to train" in again.stderr
    assert all("finished before" in line for line in again.stdout.splitlines() if "learning_rate=" in line)


def test_the_sweep_directory_defaults_under_runs():
    from grpo_cli.workflows.sweep import default_directory

    assert default_directory("addition") == Path("runs") / "sweep-addition"


@pytest.mark.slow
def test_an_interrupted_sweep_stops_its_run_cleanly_and_continues_it(tiny_recipe, tmp_path):
    import signal
    import time

    recipe = tiny_recipe({"trainer": {"max_steps": 16, "save_steps": 2}})
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "grpo_cli", "sweep", str(recipe), "trainer.learning_rate=0.01,0.05"]
    command += ["-o", str(sweep_dir)]
    first = sweep_dir / "learning_rate=0.01"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = first / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "sweep interrupted; continue with the same command" in err
    assert "SIGINT: stopped at step" in err and "Traceback" not in err
    assert list(first.glob("checkpoint-*")) and not (sweep_dir / "learning_rate=0.05").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = {
        line.split("│")[2].strip(): line for line in again.stdout.splitlines() if "learning_rate=" in line
    }
    assert "resumed" in rows["learning_rate=0.01"] and "trained" in rows["learning_rate=0.05"]
    assert json.loads((first / "summary.json").read_text())["steps"] == 16
