"""Several processes: a real 2-process CPU (gloo) GRPO run through accelerate's launcher."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from grpo_cli import distributed


def test_launch_command_drops_num_processes_and_reruns_the_module():
    argv = distributed._argv_without_num_processes(["train", "r.yaml", "--num-processes", "2", "lora.r=4"])
    assert argv == ["train", "r.yaml", "lora.r=4"]
    command = distributed.launch_command(2, argv)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[-5:] == ["-m", "grpo_cli", "train", "r.yaml", "lora.r=4"]
    assert command[command.index("--num_processes") + 1] == "2"


def test_validate_counts_processes_in_the_batch_rule(cli, tiny_recipe):
    path = tiny_recipe({"trainer": {"per_device_train_batch_size": 2, "num_generations": 4}})
    result = cli("validate", path)
    assert result.exit_code == 2 and "processes (1) x per_device_train_batch_size (2)" in result.stderr
    assert cli("validate", path, "--num-processes", "2").exit_code == 0


@pytest.mark.slow
def test_two_process_run_trains_once_and_writes_once(tmp_path):
    from tests.conftest import TINY_RECIPE

    recipe = tmp_path / "tiny.yaml"
    run = tmp_path / "run"
    data = {**TINY_RECIPE, "output_dir": str(run)}
    data["trainer"] = {**TINY_RECIPE["trainer"], "per_device_train_batch_size": 4}
    recipe.write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", str(recipe), "--num-processes", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: 4 steps") == 1  # one process reports
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # written once, not once per process
    # Each step saw both processes' completions: 2 processes x 4 completions of (prompt + 2 tokens) or less.
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (run / "adapter_model.safetensors").exists()
    assert (run / "checkpoint-4" / "rng_state_1.pth").exists()  # the second process really took part
