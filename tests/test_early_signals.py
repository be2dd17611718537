"""A signal before training starts (imports, checks, model and data loading): exit 130 (SIGINT) or 143 (SIGTERM),
one line, no traceback, and nothing half-made: no directory holding only run.lock, no marker of a run that never
trained, a previous run's files untouched (issue 23, item 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_RECIPE, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def start_train(tmp_path: Path, *args) -> subprocess.Popen:
    """`grpo-cli train` through its entry point, in its own session (so SIGINT is not ignored)."""
    recipe = dict(TINY_RECIPE, output_dir=str(tmp_path / "run"))
    recipe["trainer"] = {**TINY_RECIPE["trainer"], "max_steps": 200, "save_steps": 100}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    code = "from grpo_cli.__main__ import main; main()"  # what the `grpo-cli` script runs
    return subprocess.Popen(
        [sys.executable, "-c", code, "train", "r.yaml", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def signal_after(process: subprocess.Popen, delay: float, signum: int) -> tuple[int, str]:
    time.sleep(delay)
    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def check_stopped(tmp_path: Path, code: int, stderr: str, signum: int) -> None:
    run = tmp_path / "run"
    assert code == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]
    name = signal.Signals(signum).name
    lines = [line for line in stderr.splitlines() if name in line]
    assert len(lines) == 1, stderr[-3000:]
    if "stopped at step" in lines[0]:  # a slow start let training begin: a whole checkpoint, as any stop
        assert (run / lines[0].split("saved in ")[1].split(";")[0].split("/")[-1]).is_dir()
        return
    assert lines[0] in (
        f"{name}: stopped before training began; nothing was trained",
        f"interrupted ({name})",
    )
    assert not run.exists(), sorted(p.name for p in run.rglob("*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_a_signal_during_imports_stops_cleanly(tmp_path, delay, signum):
    code, stderr = signal_after(start_train(tmp_path), delay, signum)
    check_stopped(tmp_path, code, stderr, signum)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [2.0, 3.0, 4.0, 5.0])
def test_a_signal_while_loading_stops_cleanly(tmp_path, delay, signum):
    code, stderr = signal_after(start_train(tmp_path), delay, signum)
    check_stopped(tmp_path, code, stderr, signum)


# ---- where it stops, deterministically: a signal raised inside loading ----


def interrupt_in(monkeypatch, module, name: str, signum: int = signal.SIGINT) -> None:
    from grpo_cli import interrupts

    def stopped(*_args, **_kwargs):
        raise interrupts.Interrupted(signum)

    monkeypatch.setattr(module, name, stopped)


@pytest.mark.parametrize("where", ["loading the model", "saving the base model"])
def test_a_new_run_stopped_before_training_leaves_nothing(tmp_path, cli, tiny_recipe, monkeypatch, where):
    from grpo_cli import models, run_dir

    interrupt_in(
        monkeypatch,
        *((models, "load_model") if where == "loading the model" else (run_dir, "save_base_model")),
    )
    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    result = cli("train", recipe)
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == "SIGINT: stopped before training began; nothing was trained"
    assert not run.exists()


def test_overwrite_stopped_before_the_run_starts_keeps_the_previous_run(
    tmp_path, cli, tiny_recipe, monkeypatch
):
    from grpo_cli import models

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    previous = {"run.json": '{"algorithm": "grpo"}', "metrics.jsonl": '{"step": 1}\n', "notes.md": "mine"}
    for name, text in previous.items():
        (run / name).write_text(text)
    (run / "checkpoint-2").mkdir()
    interrupt_in(monkeypatch, models, "load_model", signal.SIGTERM)
    result = cli("train", recipe, "--overwrite")
    assert result.exit_code == 143, result.output
    kept = ["checkpoint-2", "metrics.jsonl", "notes.md", "run.json", "run.lock"]  # a run keeps its lock file
    assert sorted(p.name for p in run.iterdir()) == kept
    assert all((run / name).read_text() == text for name, text in previous.items())


def test_overwrite_stopped_after_the_run_started_leaves_no_half_run(tmp_path, cli, tiny_recipe, monkeypatch):
    """Past begin_run the previous run is gone (as --overwrite asked); the new one never trained: it goes too, and
    a user's file stays."""
    from grpo_cli import run_dir

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"algorithm": "grpo"}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "notes.md").write_text("mine")
    interrupt_in(monkeypatch, run_dir, "save_base_model")
    result = cli("train", recipe, "--overwrite")
    assert result.exit_code == 130, result.output
    assert sorted(p.name for p in run.iterdir()) == ["notes.md"]


def test_a_resumed_run_stopped_before_training_keeps_every_file(tmp_path, cli, tiny_recipe, monkeypatch):
    from grpo_cli import run_dir
    from grpo_cli.run_dir import write_marker

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    write_marker(run, "grpo")
    make_checkpoint(run, 2)
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    interrupt_in(monkeypatch, run_dir, "save_base_model")  # inside begin_run, as the resumed run starts
    result = cli("train", recipe, "--resume")
    assert result.exit_code == 130, result.output
    assert "resuming from" in result.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # run.json records the resume (its `resumes` list, see the manifest), and nothing else of it changes.
    marker = json.loads(after.pop(run / "run.json"))
    assert [r["changed"] for r in marker.pop("resumes")] == [[]]
    assert marker == json.loads(before.pop(run / "run.json"))
    assert after == {**before, run / "run.lock": after[run / "run.lock"]}
