"""Faults injected into real `grpo-cli train` processes: signals, SIGKILL (mid-run and mid-save), a full disk, a
second writer, --overwrite over a user's files, several processes. After each: what is on disk, how many steps
were lost, and that --resume finishes the run with every step in metrics.jsonl exactly once (issue 10).

Steps lost = the last step logged before the fault - the step of the checkpoint that --resume continues from.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import PPO_RECIPE, TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers ----


def write_recipe(
    tmp_path: Path, algorithm: str = "grpo", name: str = "r.yaml", **trainer
) -> tuple[Path, Path]:
    data = copy.deepcopy(PPO_RECIPE if algorithm == "ppo" else TINY_RECIPE)
    data["trainer"].update(trainer)
    run = tmp_path / f"run-{Path(name).stem}"
    data["output_dir"] = str(run)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, run


def environment() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "HF_HUB_OFFLINE": "1",
    }


class Train:
    """`grpo-cli train ARGS` in its own session (a non-interactive shell would start it with SIGINT ignored)."""

    def __init__(self, tmp_path: Path, *args, name: str = "train"):
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.stdout_path = tmp_path / f"{name}.stdout"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grpo_cli", "train", *map(str, args)],
            cwd=tmp_path,
            env=environment(),
            stdout=self.stdout_path.open("w"),
            stderr=self.stderr_path.open("w"),
            start_new_session=True,
        )

    def send(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 240) -> int:
        return self.process.wait(timeout=timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()


def steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def wait_until(condition, what: str, train: Train | None = None, timeout: float = 180, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if train is not None and train.process.poll() is not None:
            raise AssertionError(
                f"train ended ({train.process.returncode}) before {what}: {train.stderr[-2000:]}"
            )
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def complete_checkpoints(run: Path) -> list[int]:
    from grpo_cli.run_dir import checkpoint_is_complete, checkpoints

    return sorted(int(p.name.split("-")[1]) for p in checkpoints(run) if checkpoint_is_complete(p))


def resume_to_the_end(tmp_path: Path, command: list[str], run: Path, max_steps: int) -> str:
    """Run `command` (a --resume), check it finishes with every step logged once; return its stderr."""
    result = subprocess.run(
        command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps(run) == list(range(1, max_steps + 1))  # every step exactly once
    assert json.loads((run / "summary.json").read_text())["steps"] == max_steps
    assert not (run / ".saving").exists()
    return result.stderr


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "grpo_cli", "train", *map(str, args)]


def printed_resume_command(stderr: str) -> list[str]:
    match = re.search(r"continue with: (.+)$", stderr, re.MULTILINE)
    assert match, stderr[-2000:]
    argv = shlex.split(match.group(1))
    assert argv[0] == "grpo-cli" and argv[-1] == "--resume"
    return [sys.executable, "-m", "grpo_cli", *argv[1:]]


# ---- signals ----


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "signum"),
    [("grpo", signal.SIGINT), ("grpo", signal.SIGTERM), ("ppo", signal.SIGINT), ("ppo", signal.SIGTERM)],
    ids=["grpo-SIGINT", "grpo-SIGTERM", "ppo-SIGINT", "ppo-SIGTERM"],
)
def test_a_signal_saves_the_current_step_and_resume_loses_nothing(tmp_path, algorithm, signum):
    recipe, run = write_recipe(tmp_path, algorithm, max_steps=8, save_steps=5)
    train = Train(tmp_path, recipe)
    at = random.randint(2, 4)
    wait_until(lambda: len(steps(run)) >= at, f"step {at}", train)
    train.send(signum)
    assert train.wait() == 128 + signum
    stopped = steps(run)[-1]
    line = re.search(r"stopped at step (\d+), saved in (\S+);", train.stderr)
    assert line, train.stderr[-2000:]
    assert int(line.group(1)) == stopped and Path(line.group(2)) == run / f"checkpoint-{stopped}"
    assert 2 <= stopped < 8
    assert steps(run) == list(range(1, stopped + 1))  # metrics through the step it stopped at
    assert complete_checkpoints(run)[-1] == stopped  # steps lost: 0
    assert not (run / ".saving").exists() and not (run / "summary.json").exists()
    stderr = resume_to_the_end(tmp_path, printed_resume_command(train.stderr), run, 8)
    assert f"resuming from {run / f'checkpoint-{stopped}'}" in stderr


def stage_recipe(tmp_path: Path, algorithm: str, max_steps: int, save_steps: int) -> tuple[Path, Path]:
    """A tiny SFT recipe (the addition task's answers as targets) or reward recipe (tests/tiny_runs.py's pairs)."""
    from tests.tiny_runs import reward_recipe

    if algorithm == "reward":
        path = reward_recipe(tmp_path)
        data = yaml.safe_load(path.read_text())
    else:
        data = copy.deepcopy(TINY_RECIPE)
        data.update(algorithm="sft", rewards=[])
        data["dataset"] = {**data["dataset"], "completion": "{answer}"}
        data["trainer"] = {"learning_rate": 0.01, "per_device_train_batch_size": 8}
        path = tmp_path / "sft.yaml"
    data["trainer"].update(max_steps=max_steps, save_steps=save_steps)
    run = tmp_path / f"run-{algorithm}"
    data["output_dir"] = str(run)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, run


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "signum"), [("sft", signal.SIGINT), ("reward", signal.SIGTERM)])
def test_a_signal_to_an_sft_or_reward_run_saves_and_resume_loses_nothing(tmp_path, algorithm, signum):
    """The fault table's SFT and reward rows: their steps take milliseconds, so the run is long and the signal
    comes once a few steps are logged."""
    recipe, run = stage_recipe(tmp_path, algorithm, max_steps=300, save_steps=150)
    train = Train(tmp_path, recipe)
    wait_until(lambda: len(steps(run)) >= 3, "step 3", train)
    train.send(signum)
    assert train.wait() == 128 + signum
    stopped = steps(run)[-1]
    assert re.search(rf"stopped at step {stopped}, saved in ", train.stderr), train.stderr[-2000:]
    assert complete_checkpoints(run)[-1] == stopped < 300  # steps lost: 0
    stderr = resume_to_the_end(tmp_path, printed_resume_command(train.stderr), run, 300)
    assert f"resuming from {run / f'checkpoint-{stopped}'}" in stderr


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(tmp_path):
    # Long steps (64 prompts, 48 tokens each), so that the second Ctrl-C comes while the first step still runs.
    recipe, run = write_recipe(
        tmp_path, max_steps=50, save_steps=25, per_device_train_batch_size=64, max_completion_length=48
    )
    train = Train(tmp_path, recipe)
    wait_until(lambda: len(steps(run)) >= 1, "step 1", train)
    train.send(signal.SIGINT)
    wait_until(lambda: "finishing the current step" in train.stderr, "the first interrupt's notice", train)
    train.send(signal.SIGINT)
    assert train.wait(timeout=60) == 130
    assert "second interrupt: stopping at once, without a checkpoint" in train.stderr
    assert "stopped at step" not in train.stderr
    assert len(steps(run)) < 25 and complete_checkpoints(run) == []


# ---- SIGKILL: no chance to save ----


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_sigkill_loses_at_most_save_steps(tmp_path, algorithm):
    recipe, run = write_recipe(tmp_path, algorithm, max_steps=10, save_steps=3)
    train = Train(tmp_path, recipe)
    at = random.randint(4, 7)
    wait_until(lambda: len(steps(run)) >= at, f"step {at}", train)
    train.send(signal.SIGKILL)
    train.wait()
    logged = steps(run)[-1]
    checkpoint = complete_checkpoints(run)[-1]
    assert 0 <= logged - checkpoint <= 3  # steps lost
    stderr = resume_to_the_end(tmp_path, cli_command(recipe, "--resume"), run, 10)
    assert f"resuming from {run / f'checkpoint-{checkpoint}'}" in stderr


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_save_leaves_no_partial_checkpoint(tmp_path):
    recipe, run = write_recipe(tmp_path, max_steps=40, save_steps=1)
    train = Train(tmp_path, recipe)
    staging = run / ".saving"
    wait_until(lambda: len(steps(run)) >= 2, "step 2", train)
    wait_until(lambda: any(staging.glob("checkpoint-*")), "a checkpoint being saved", train, poll=0.001)
    train.send(signal.SIGKILL)
    train.wait()
    # Every checkpoint-N in the run is whole; what was being written is under .saving/ only.
    names = sorted(p.name for p in run.glob("checkpoint-*"))
    assert names and len(names) == len(complete_checkpoints(run))
    last = complete_checkpoints(run)[-1]
    assert steps(run)[-1] - last <= 1
    # A partial checkpoint as an older grpo-cli left them (0-byte files) is skipped, with a notice.
    partial = run / f"checkpoint-{last + 5}"
    partial.mkdir()
    (partial / "trainer_state.json").write_bytes(b"")
    (partial / "optimizer.pt").write_bytes(b"")
    target = max(12, last + 6)
    stderr = resume_to_the_end(
        tmp_path, cli_command(recipe, "--resume", f"trainer.max_steps={target}"), run, target
    )
    assert f"skipping {partial.name}: incomplete" in stderr
    assert f"resuming from {run / f'checkpoint-{last}'}" in stderr


# ---- a full disk ----


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()

    def mount_with(size: str) -> Path:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        return mount

    yield mount_with
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_last_checkpoint_resumes(tmp_path, small_disk):
    import shutil

    disk = small_disk("400k")  # base_model/ and three checkpoints of the tiny model fit, not all twelve
    recipe, _ = write_recipe(tmp_path, max_steps=12, save_steps=1)
    run = disk / "run"
    train = Train(tmp_path, recipe, "--output-dir", run)
    assert train.wait() == 2, train.stderr[-3000:]
    line = train.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: the disk is full: could not write .+ in {run} \(.+ free\); checkpoint-\d+ is complete: free "
        r"some space, then continue with --resume",
        line,
    ), line
    assert "Traceback" not in train.stderr
    last = complete_checkpoints(run)[-1]
    assert line.endswith("--resume") and f"checkpoint-{last} is complete" in line
    assert not (run / ".saving").exists()
    # Space freed (the run moved to a bigger disk): --resume finishes it.
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    resume_to_the_end(tmp_path, cli_command(recipe, "--output-dir", moved, "--resume"), moved, 12)


# ---- a second writer ----


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_trains(tmp_path, cli):
    # A run far longer than the test (stopped with SIGINT below): the first one must still hold the directory
    # while the others try, however slowly they start.
    recipe, run = write_recipe(tmp_path, max_steps=5000, save_steps=5)
    train = Train(tmp_path, recipe)
    wait_until(lambda: len(steps(run)) >= 1, "step 1", train)
    pid = train.process.pid
    assert (run / "run.lock").read_text().strip() == str(pid)
    for flags in ([], ["--overwrite"], ["--resume"]):
        result = cli("train", recipe, *flags)
        assert result.exit_code == 2, (flags, result.output)
        assert result.stderr.strip() == (
            f"error: {run} is in use by another grpo-cli process (pid {pid}); wait for it to end, stop it, "
            "or write elsewhere with --output-dir"
        )
    assert train.process.poll() is None  # still training: the refusals were the lock's, not a finished run's
    train.send(signal.SIGINT)
    assert train.wait() == 130, train.stderr[-2000:]
    stopped = steps(run)[-1]
    assert steps(run) == list(range(1, stopped + 1))  # only the first run wrote, every step once
    assert complete_checkpoints(run)[-1] == stopped


# ---- several processes ----


@pytest.mark.slow
def test_sigterm_to_a_two_process_run_saves_and_leaves_no_orphan(tmp_path):
    recipe, run = write_recipe(tmp_path, max_steps=8, save_steps=6, per_device_train_batch_size=4)
    train = Train(tmp_path, recipe, "--num-processes", "2")
    wait_until(lambda: len(steps(run)) >= 2, "step 2", train, timeout=240)
    launch = [
        int(c)
        for c in Path(f"/proc/{train.process.pid}/task/{train.process.pid}/children").read_text().split()
    ]
    assert launch, "no launcher process"
    workers = [int(c) for c in Path(f"/proc/{launch[0]}/task/{launch[0]}/children").read_text().split()]
    assert len(workers) == 2
    train.send(signal.SIGTERM)
    assert train.wait() == 143, train.stderr[-3000:]
    for pid in [*launch, *workers]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    stopped = steps(run)[-1]
    assert complete_checkpoints(run)[-1] == stopped  # steps lost: 0
    assert f"stopped at step {stopped}" in train.stderr
    command = printed_resume_command(train.stderr)
    at = command.index("--num-processes")
    assert command[at + 1] == "2"
    # Resumed in one process, which CI affords: a checkpoint does not depend on the process count.
    resume_to_the_end(tmp_path, command[:at] + command[at + 2 :], run, 8)


# ---- --overwrite and a user's files (fast: refused before anything loads) ----


def test_overwrite_refuses_a_project_directory_and_deletes_nothing(tmp_path, cli, tiny_recipe):
    project = tmp_path / "p"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print(1)")
    (project / ".git").mkdir()
    recipe = project / "recipe.yaml"
    recipe.write_text(tiny_recipe().read_text())
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    result = cli("train", recipe, "-o", project, "--overwrite")
    assert result.exit_code == 2
    assert f"{project} is not empty and holds no grpo-cli run" in result.stderr
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before  # not even a lock file


def test_overwrite_of_the_current_directory_deletes_nothing(tmp_path, cli, tiny_recipe, monkeypatch):
    (tmp_path / "notes.md").write_text("mine")
    recipe = tiny_recipe(name="recipe.yaml")  # a user's recipe.yaml made `.` count as a run, and go
    monkeypatch.chdir(tmp_path)
    for flags in (["--overwrite"], [], ["--resume"]):
        result = cli("train", recipe, "-o", ".", *flags)
        assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
        assert "Traceback" not in result.output
    assert (tmp_path / "notes.md").read_text() == "mine" and recipe.is_file()
    assert not (tmp_path / "run.lock").exists()


def test_overwrite_refuses_a_run_without_its_marker(tmp_path, cli, tiny_recipe):
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "recipe.yaml").write_text("algorithm: grpo\n")
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    result = cli("train", tiny_recipe(), "-o", old, "--overwrite")
    assert result.exit_code == 2
    assert "holds a run from an older grpo-cli, without its run.json marker" in result.stderr
    # no lock file left: it guards no run
    assert sorted(p.name for p in old.iterdir()) == ["metrics.jsonl", "recipe.yaml"]


def test_resume_of_a_run_that_never_reached_a_checkpoint_says_so(tmp_path, cli, tiny_recipe):
    from grpo_cli.run_dir import write_marker

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    write_marker(run, "grpo")
    (run / "base_model").mkdir()
    result = cli("train", recipe, "--resume")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --resume: {run} never reached its first checkpoint, so there is nothing to resume; "
        "start it again with --overwrite"
    )


# ---- a config TRL rejects fails before any model loads (issue 11) ----


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_a_trainer_config_trl_rejects_fails_before_the_model_loads(tmp_path, cli, monkeypatch, algorithm):
    from grpo_cli import models

    def never(*_args, **_kwargs):
        raise AssertionError("the model loaded before TRL's config was checked")

    monkeypatch.setattr(models, "load_model", never)
    # The type is right (TRL takes a dict or a JSON string) and validate does not parse it; TRL's __post_init__ does.
    recipe, run = write_recipe(tmp_path, algorithm, lr_scheduler_kwargs="{bad json")
    result = cli("train", recipe)
    assert result.exit_code == 2, result.output
    config = "GRPOConfig" if algorithm == "grpo" else "PPOConfig"
    assert result.stderr.startswith(f"error: trainer: TRL's {config} rejected the settings: ")
    assert not run.exists()  # nor a lock file left behind


# ---- PPO: a longer max_steps on resume ----


@pytest.mark.slow
def test_ppo_resume_with_a_longer_max_steps_trains_from_the_first_resumed_step(tmp_path, cli):
    from safetensors.torch import load_file

    recipe, run = write_recipe(tmp_path, "ppo", max_steps=2, save_steps=1, lr_scheduler_type="linear")
    assert cli("train", recipe).exit_code == 0
    result = cli("train", recipe, "trainer.max_steps=4", "--resume")
    assert result.exit_code == 0, result.output
    # linear schedule, lr 0.05: recomputed over 4 steps, step 3 runs at 0.05 x (4 - 2) / 4 (the old one was at 0)
    assert "max_steps 2 -> 4: the learning-rate schedule (linear) now spans 4 steps" in result.stderr
    assert "step 3 runs at lr 0.025 (the old schedule was at 0)" in result.stderr
    at_2 = load_file(run / "checkpoint-2" / "adapter_model.safetensors")
    at_3 = load_file(run / "checkpoint-3" / "adapter_model.safetensors")
    assert all(not at_2[name].eq(at_3[name]).all() for name in at_2 if "lora_B" in name)  # step 3 trained
    assert steps(run) == [1, 2, 3, 4]
    rates = [json.loads(line)["learning_rate"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rates[2:] == pytest.approx([0.025, 0.0125])


# ---- the pieces (fast) ----


def test_a_run_lock_names_its_holder_and_goes_with_an_empty_directory(tmp_path, monkeypatch):
    from grpo_cli.errors import UserError
    from grpo_cli.run_dir import LOCK_ENV, RunLock

    run = tmp_path / "new-run"
    first = RunLock(run)
    first.acquire()
    assert (run / "run.lock").read_text() == f"{os.getpid()}\n"
    monkeypatch.delenv(LOCK_ENV)  # as in another process
    with pytest.raises(UserError, match=rf"in use by another grpo-cli process \(pid {os.getpid()}\)"):
        RunLock(run).acquire()
    first.release()
    assert not run.exists()  # it created the directory and nothing else came into it


def test_overwrite_clears_only_a_runs_own_files(tmp_path):
    from grpo_cli.run_dir import clear_previous_run

    run = tmp_path / "run"
    for name in [
        "run.json",
        "metrics.jsonl",
        "adapter_model.safetensors",
        ".metrics.jsonl.1-ab.tmp",
        "run.lock",
    ]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    for folder in ["checkpoint-2", "base_model", ".saving/checkpoint-4", "eval", "src"]:
        (run / folder).mkdir(parents=True)
    (run / "notes.md").write_text("mine")
    # A user's folders and files that merely look like ours (issue 23, item 12) stay.
    mine = ["checkpoint-best-by-hand", "checkpoint-old", "checkpoint-3-notes"]
    for folder in mine:
        (run / folder).mkdir()
        (run / folder / "notes.txt").write_text("mine")
    (run / ".draft.tmp").write_text("mine")
    kept = sorted([".draft.tmp", *mine, "eval", "notes.md", "src"])
    assert clear_previous_run(run) == kept
    assert sorted(p.name for p in run.iterdir()) == sorted([*kept, "run.lock"])


def test_resume_skips_incomplete_checkpoints(tmp_path, capsys):
    from grpo_cli.run_dir import last_complete_checkpoint

    for step, state in [(2, {"global_step": 2}), (4, {"global_step": 4}), (6, None)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps(state) if state else "")
    (tmp_path / "checkpoint-8").mkdir()
    assert last_complete_checkpoint(tmp_path, quiet=False) == tmp_path / "checkpoint-4"
    assert capsys.readouterr().err.splitlines() == [
        "skipping checkpoint-8: incomplete (it was being written when the run stopped)",
        "skipping checkpoint-6: incomplete (it was being written when the run stopped)",
    ]


def test_the_resume_command_is_the_typed_one_with_resume(monkeypatch):
    from grpo_cli import interrupts

    monkeypatch.setenv(interrupts.COMMAND_ENV, "grpo-cli train 'my recipe.yaml' --overwrite lora.r=8")
    assert interrupts.resume_command(Path("runs/x")) == (
        "grpo-cli train 'my recipe.yaml' lora.r=8 --output-dir runs/x --resume"
    )
    monkeypatch.delenv(interrupts.COMMAND_ENV)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/grpo-cli", "train", "r.yaml", "-o", "out", "--resume"])
    assert interrupts.resume_command(Path("out")) == "grpo-cli train r.yaml -o out --resume"
    # A pipeline stage: the pipeline takes no --output-dir or --resume, and run again it resumes that stage.
    monkeypatch.setattr(sys, "argv", ["/venv/bin/grpo-cli", "train", "quickstart", "--overwrite"])
    assert (
        interrupts.resume_command(Path("runs/pipeline-sft"), in_pipeline=True) == "grpo-cli train quickstart"
    )


def test_resume_of_a_run_finished_without_checkpoints(tmp_path, cli, tiny_recipe):
    from grpo_cli.run_dir import write_marker

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    write_marker(run, "grpo")
    (run / "summary.json").write_text(json.dumps({"steps": 4}))
    result = cli("train", recipe, "--resume")  # max_steps 4: complete
    assert result.exit_code == 0 and f"{run} is complete: it trained 4 steps" in result.stdout
    result = cli("train", recipe, "--resume", "trainer.max_steps=6")
    assert result.exit_code == 2
    assert (
        "finished without saving a checkpoint (trainer.save_strategy), so it cannot train further"
        in result.stderr
    )


# ---- what only the loaded model can tell fails before the run directory is touched (issue 11) ----


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_lora_targets_that_match_nothing_fail_before_the_run_directory_is_touched(tmp_path, cli, algorithm):
    recipe, run = write_recipe(tmp_path, algorithm)
    data = yaml.safe_load(recipe.read_text())
    data["lora"]["target_modules"] = ["q_projj"]
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli("train", recipe)
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error")]  # after the printed recipe
    assert result.stderr.strip().endswith(line) and "q_projj" in line and "q_proj" in line
    assert not run.exists()


@pytest.mark.parametrize("metrics", [False, True])
def test_train_again_after_a_crash_before_the_first_checkpoint_says_overwrite(
    tmp_path, cli, tiny_recipe, metrics
):
    """A run that crashed at step 1 has its marker and no checkpoint: train again says --overwrite the first time,
    never --resume (which would only say there is nothing to resume)."""
    from grpo_cli.run_dir import write_marker

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    write_marker(run, "grpo")
    (run / "recipe.yaml").write_text(recipe.read_text())
    (run / "base_model").mkdir()
    if metrics:
        (run / "metrics.jsonl").write_text('{"step": 1, "reward": 0.1}\n')
    result = cli("train", recipe)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {run} already holds a run that stopped before its first checkpoint, so there is nothing to "
        "resume; pass --overwrite to start it again, or --output-dir to write elsewhere"
    )
