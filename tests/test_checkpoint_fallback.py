"""A damaged newest checkpoint: `--resume` checks every file it would load, skips the checkpoint with one line
naming what is wrong, and resumes from the newest one that loads; with none left, one line and exit 2 (issue 23,
item 7). Fast: the checker over hand-made checkpoints; slow: real runs of each algorithm, damaged and resumed."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import PPO_RECIPE, TINY_RECIPE, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


# ---- hand-made checkpoints and damage ----


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink() if path.is_file() else shutil.rmtree(path)
    elif how == "pickle":  # objects weights_only refuses, in torch.save's own format
        import torch

        torch.save({"state": Evil()}, path)
    else:
        raise ValueError(how)


SAFETENSORS_GARBAGE = (
    "truncated or not safetensors (SafetensorError: Error while deserializing header: header too large)"
)
SAFETENSORS_CUT = (
    "truncated or not safetensors (SafetensorError: Error while deserializing header: incomplete metadata, "
    "file not fully covered)"
)
REFUSED = "holds objects torch will not load with weights_only=True (not a file grpo-cli wrote)"

# (file, damage, algorithm, lora, what the notice says)
CASES = [
    ("adapter_model.safetensors", "truncated", "grpo", True, f"adapter_model.safetensors is damaged: {SAFETENSORS_CUT}"),
    ("adapter_model.safetensors", "garbage", "grpo", True, f"adapter_model.safetensors is damaged: {SAFETENSORS_GARBAGE}"),
    ("adapter_model.safetensors", "empty", "grpo", True, "adapter_model.safetensors is empty"),
    ("adapter_model.safetensors", "missing", "grpo", True, "adapter_model.safetensors is missing"),
    ("adapter_config.json", "missing", "grpo", True, "adapter_config.json is missing"),
    ("adapter_config.json", "garbage", "sft", True, "adapter_config.json is damaged (UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80 in position 128: invalid start byte)"),
    ("model.safetensors", "truncated", "sft", False, f"model.safetensors is damaged: {SAFETENSORS_CUT}"),
    ("model.safetensors", "missing", "sft", False, "model.safetensors is missing"),
    ("config.json", "empty", "reward", False, "config.json is empty (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    ("optimizer.pt", "truncated", "grpo", True, "optimizer.pt is damaged: truncated or not a torch.save file"),
    ("optimizer.pt", "garbage", "ppo", True, "optimizer.pt is damaged: truncated or not a torch.save file"),
    ("optimizer.pt", "empty", "reward", True, "optimizer.pt is empty"),
    ("optimizer.pt", "missing", "grpo", True, "optimizer.pt is missing"),
    ("optimizer.pt", "pickle", "grpo", True, f"optimizer.pt {REFUSED}"),
    ("scheduler.pt", "garbage", "grpo", True, "scheduler.pt is damaged: truncated or not a torch.save file"),
    ("scheduler.pt", "missing", "ppo", True, "scheduler.pt is missing"),
    ("rng_state.pth", "truncated", "grpo", True, "rng_state.pth is damaged: truncated or not a torch.save file"),
    ("rng_state.pth", "missing", "sft", True, "rng_state.pth is missing"),
    ("rng_state.pth", "pickle", "grpo", True, f"rng_state.pth {REFUSED}"),
    ("value_model/model.safetensors", "garbage", "ppo", True, f"value_model/model.safetensors is damaged: {SAFETENSORS_GARBAGE}"),
    ("value_model/model.safetensors", "missing", "ppo", True, "value_model/model.safetensors is missing"),
    ("value_model", "missing", "ppo", True, "value_model/ is missing"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "how", "algorithm", "lora", "notice"),
    CASES,
    ids=[f"{algorithm}-{name}-{how}" for name, how, algorithm, _, _ in CASES],
)
def test_a_damaged_newest_checkpoint_is_skipped_naming_the_file(
    tmp_path, capsys, name, how, algorithm, lora, notice
):
    from grpo_cli.run_dir import usable_checkpoint

    for step in (2, 4):
        newest = make_checkpoint(tmp_path, step, lora=lora, value_model=algorithm == "ppo")
    damage(newest / name, how)
    assert usable_checkpoint(tmp_path, algorithm=algorithm, quiet=False) == (
        tmp_path / "checkpoint-2",
        [f"checkpoint-4: {notice}"],
    )
    assert capsys.readouterr().err == f"skipping checkpoint-4: {notice}\n"


def test_a_whole_checkpoint_passes_and_only_what_the_run_saves_is_expected(tmp_path):
    from grpo_cli.algorithms.ppo_compat import CheckpointExtras
    from grpo_cli.algorithms.table import ALGORITHMS
    from grpo_cli.checkpoint_files import checkpoint_problems

    assert ALGORITHMS["ppo"].checkpoint_parts == (CheckpointExtras.VALUE_MODEL_DIR,)
    plain = make_checkpoint(tmp_path / "grpo", 2)
    assert checkpoint_problems(plain) == []
    assert checkpoint_problems(plain, parts=("value_model",)) == ["value_model/ is missing"]
    # trainer.save_only_model: no optimizer, schedule or random state, and none expected
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (plain / name).unlink()
    assert checkpoint_problems(plain, model_only=True) == []
    assert checkpoint_problems(plain) == [
        "optimizer.pt is missing",
        "scheduler.pt is missing",
        "rng_state.pth is missing",
    ]
    # a multi-process run's random states: one file per process
    several = make_checkpoint(tmp_path / "ddp", 2)
    (several / "rng_state.pth").rename(several / "rng_state_0.pth")
    shutil.copy(several / "rng_state_0.pth", several / "rng_state_1.pth")
    assert checkpoint_problems(several) == []
    (several / "rng_state_1.pth").write_bytes(b"")
    assert checkpoint_problems(several) == ["rng_state_1.pth is empty"]


def test_a_sharded_model_needs_every_shard_its_index_names(tmp_path):
    from safetensors.torch import load_file, save_file

    from grpo_cli.checkpoint_files import checkpoint_problems

    checkpoint = make_checkpoint(tmp_path, 2, lora=False)
    tensors = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    save_file(tensors, checkpoint / "model-00001-of-00002.safetensors")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {"weight_map": {"lm_head.weight": shards[0], "embed.weight": shards[1]}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    assert checkpoint_problems(checkpoint) == [
        "model-00002-of-00002.safetensors is missing (named in model.safetensors.index.json)"
    ]
    shutil.copy(checkpoint / shards[0], checkpoint / shards[1])
    assert checkpoint_problems(checkpoint) == []


def test_every_checkpoint_damaged_is_one_line_and_exit_2(tmp_path, cli, tiny_recipe):
    from grpo_cli.run_dir import write_marker

    recipe = tiny_recipe()
    run = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    run.mkdir(parents=True)
    write_marker(run, "grpo")
    damage(make_checkpoint(run, 2) / "optimizer.pt", "empty")
    result = cli("train", recipe, "--resume")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "skipping checkpoint-2: optimizer.pt is empty",
        f"error: --resume: the only checkpoint in {run} cannot be loaded (checkpoint-2: optimizer.pt is empty), so "
        "there is nothing to resume from; start the run again with --overwrite (or restore the checkpoint from a "
        "copy)",
    ]
    damage(make_checkpoint(run, 4) / "adapter_model.safetensors", "missing")
    result = cli("train", recipe, "--resume")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == (
        f"error: --resume: none of the 2 checkpoints in {run} can be loaded (checkpoint-4: adapter_model.safetensors "
        "is missing; checkpoint-2: optimizer.pt is empty), so there is nothing to resume from; start the run again "
        "with --overwrite (or restore a checkpoint from a copy)"
    )
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "checkpoint-4", "run.json", "run.lock"]


def test_resuming_from_an_older_checkpoint_removes_the_newer_ones(tmp_path, capsys):
    from grpo_cli.run_dir import begin_run, write_marker

    write_marker(tmp_path, "grpo")
    for step in (2, 4, 6):
        make_checkpoint(tmp_path, step)
    begin_run(tmp_path, "grpo", resume_from=tmp_path / "checkpoint-2", main_process=True)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (
        capsys.readouterr().err
        == "removed checkpoint-4, checkpoint-6: the resumed run trains those steps again\n"
    )


# ---- real runs, damaged and resumed (slow) ----


def environment() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "HF_HUB_OFFLINE": "1",
    }


def train(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", *map(str, args)],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def recipe_for(algorithm: str, directory: Path) -> Path:
    """A tiny recipe of `algorithm`: 4 steps, checkpoints at 2 and 4."""
    if algorithm == "reward":
        from tests.tiny_runs import reward_recipe

        path = reward_recipe(directory)
        data = yaml.safe_load(path.read_text())
        data["trainer"].update(max_steps=4, save_steps=2)
    else:
        data = copy.deepcopy(PPO_RECIPE if algorithm == "ppo" else TINY_RECIPE)
        if algorithm == "sft":
            data.update(algorithm="sft", lora=None, rewards=[])
            data["dataset"]["completion"] = "{answer}"
            data["trainer"] = {
                "learning_rate": 0.02,
                "max_steps": 4,
                "per_device_train_batch_size": 8,
                "save_steps": 2,
            }
        path = directory / f"{algorithm}.yaml"
    data["output_dir"] = str(directory / "run")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 4-step run per algorithm, trained on first use; each test damages a copy."""
    runs: dict[str, tuple[Path, Path]] = {}

    def get(algorithm: str) -> tuple[Path, Path]:
        if algorithm not in runs:
            directory = tmp_path_factory.mktemp(algorithm)
            recipe = recipe_for(algorithm, directory)
            result = train(directory, recipe)
            assert result.returncode == 0, result.stderr[-3000:]
            runs[algorithm] = (recipe, directory / "run")
        return runs[algorithm]

    return get


RUN_CASES = [
    ("grpo", "adapter_model.safetensors", "truncated", f"adapter_model.safetensors is damaged: {SAFETENSORS_CUT}"),
    ("grpo", "optimizer.pt", "pickle", f"optimizer.pt {REFUSED}"),
    ("grpo", "rng_state.pth", "empty", "rng_state.pth is empty"),
    ("ppo", "value_model/model.safetensors", "garbage", f"value_model/model.safetensors is damaged: {SAFETENSORS_GARBAGE}"),
    ("ppo", "scheduler.pt", "missing", "scheduler.pt is missing"),
    ("sft", "model.safetensors", "empty", "model.safetensors is empty"),
    ("reward", "adapter_model.safetensors", "missing", "adapter_model.safetensors is missing"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "name", "how", "notice"),
    RUN_CASES,
    ids=[f"{algorithm}-{name}-{how}" for algorithm, name, how, _ in RUN_CASES],
)
def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, trained, algorithm, name, how, notice):
    recipe, finished = trained(algorithm)
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run / "checkpoint-4" / name, how)
    result = train(tmp_path, recipe, "-o", run, "--resume", "trainer.max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"skipping checkpoint-4: {notice}\n" in result.stderr
    assert f"resuming from {run / 'checkpoint-2'}\n" in result.stderr
    assert "removed checkpoint-4: the resumed run trains those steps again\n" in result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]  # steps 3 and 4 trained again, once each
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["resumed_from"] == "checkpoint-2"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
    ]
