"""Several processes: a real 2-process CPU (gloo) GRPO run through accelerate's launcher."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_cli import distributed


def test_launch_command_drops_num_processes_and_reruns_the_module():
    from grpo_cli.recipe import DistributedSection

    argv = distributed._argv_without_num_processes(["train", "r.yaml", "--num-processes", "2", "lora.r=4"])
    assert argv == ["train", "r.yaml", "lora.r=4"]
    command = distributed.launch_command(DistributedSection(num_processes=2), argv)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[-5:] == ["-m", "grpo_cli", "train", "r.yaml", "lora.r=4"]
    assert command[command.index("--num_processes") + 1] == "2"
    multi_node = DistributedSection(
        num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29500
    )
    command = distributed.launch_command(multi_node, argv)
    assert (
        command[command.index("--num_processes") + 1] == "8"
    )  # accelerate counts processes over all machines
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[command.index("--main_process_ip") + 1] == "10.0.0.1"
    with_config = distributed.launch_command(multi_node, argv, config_file="acc.yaml")
    assert with_config[3:5] == ["--config_file", "acc.yaml"] and "--multi_gpu" not in with_config


@pytest.mark.parametrize(
    ("backend", "distributed_type", "extra"),
    [
        ("ddp", "MULTI_GPU", {}),
        ("deepspeed-zero2", "DEEPSPEED", {"deepspeed_config": {"zero_stage": 2, "zero3_init_flag": False}}),
        ("deepspeed-zero3", "DEEPSPEED", {"deepspeed_config": {"zero_stage": 3, "zero3_init_flag": True}}),
        (
            "fsdp",
            "FSDP",
            {"fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}},
        ),
    ],
)
def test_backend_presets_are_accelerate_configs(tmp_path, backend, distributed_type, extra):
    from accelerate.commands.config.config_args import load_config_from_file

    from grpo_cli.recipe import DistributedSection

    config = distributed.accelerate_config(DistributedSection(num_processes=4, backend=backend))
    assert config["distributed_type"] == distributed_type and config["num_processes"] == 4
    for section, values in extra.items():
        assert values.items() <= config[section].items()
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config_from_file(str(path))  # accelerate itself reads it
    assert loaded.distributed_type.value == distributed_type and loaded.num_processes == 4


def test_gpu_backends_are_refused_without_a_gpu(cli, tiny_recipe, monkeypatch):
    monkeypatch.setattr(distributed, "gpu_present", lambda: False)
    result = cli("validate", tiny_recipe({"distributed": {"backend": "fsdp", "num_processes": 2}}))
    assert result.exit_code == 2
    assert "distributed.backend: fsdp needs GPUs and this machine has none; use ddp" in result.stderr


def test_distributed_section_is_checked(cli, tiny_recipe):
    result = cli("validate", tiny_recipe({"distributed": {"num_machines": 2}}))
    assert result.exit_code == 2
    assert "several machines need distributed.main_process_ip" in result.stderr


def test_validate_counts_processes_in_the_batch_rule(cli, tiny_recipe):
    path = tiny_recipe({"trainer": {"per_device_train_batch_size": 2, "num_generations": 4}})
    result = cli("validate", path)
    assert result.exit_code == 2 and "processes (1) x per_device_train_batch_size (2)" in result.stderr
    assert cli("validate", path, "--num-processes", "2").exit_code == 0


def train_in_two_processes(tmp_path, data: dict) -> tuple[Path, subprocess.CompletedProcess]:
    """`grpo-cli train` of the recipe `data` with --num-processes 2, in a subprocess; returns the run dir."""
    recipe, run = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump({**data, "output_dir": str(run)}))
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", str(recipe), "--num-processes", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


@pytest.mark.slow
def test_two_process_run_trains_once_and_writes_once(tmp_path):
    from tests.helpers import TINY_RECIPE

    trainer = {**TINY_RECIPE["trainer"], "per_device_train_batch_size": 4}
    run, result = train_in_two_processes(tmp_path, {**TINY_RECIPE, "trainer": trainer})
    assert result.stdout.count("done: 4 steps") == 1  # one process reports
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # written once, not once per process
    # Each step saw both processes' completions: 2 processes x 4 completions of (prompt + 2 tokens) or less.
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (run / "adapter_model.safetensors").exists()
    assert (run / "checkpoint-4" / "rng_state_1.pth").exists()  # the second process really took part


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_two_process_ppo_run(tmp_path, lora):
    """TRL 1.12's PPOTrainer needs grpo-cli's DDP shims (ppo._unwrap_for_ddp) to run in several processes."""
    from tests.helpers import TINY_RECIPE

    trainer = {
        "learning_rate": 1e-3,
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "response_length": 2,
        "save_steps": 2,
        "missing_eos_penalty": 0.5,
    }
    data = {
        **TINY_RECIPE,
        "algorithm": "ppo",
        "lora": TINY_RECIPE["lora"] if lora else None,
        "trainer": trainer,
    }
    run, result = train_in_two_processes(tmp_path, data)
    assert result.stdout.count("done: 3 steps") == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (run / ("adapter_model.safetensors" if lora else "model.safetensors")).exists()
    assert (run / "checkpoint-2" / "value_model").is_dir()
    assert (run / "checkpoint-2" / "rng_state_1.pth").exists()


@pytest.mark.slow
def test_gradients_are_synchronised_across_processes(tmp_path):
    """After one step both processes hold the same trained adapter, though each generated for other prompts."""
    import torch

    from tests.helpers import TINY_RECIPE

    recipe = tmp_path / "tiny.yaml"
    trainer = {**TINY_RECIPE["trainer"], "per_device_train_batch_size": 4, "max_steps": 2}
    recipe.write_text(
        yaml.safe_dump({**TINY_RECIPE, "trainer": trainer, "output_dir": str(tmp_path / "run")})
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(distributed._free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
        str(Path(__file__).with_name("ddp_probe.py")), str(tmp_path), str(recipe),
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(rank0, rank1)
    initial_lora_b_is_zero = (rank0 == 0).sum() >= rank0.numel() // 2  # peft starts every lora_B at zero
    assert not initial_lora_b_is_zero, "the adapter did not train"


def _descendants(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigkill_to_the_top_process_takes_the_launcher_and_workers_with_it(tmp_path):
    """Issue 23 item 8: the launcher and both workers kept training, and writing, after the top process (the run
    lock's holder) was SIGKILLed."""
    import signal
    import time

    from tests.helpers import TINY_RECIPE

    trainer = {
        **TINY_RECIPE["trainer"],
        "per_device_train_batch_size": 4,
        "max_steps": 200,
        "save_steps": 500,
    }
    recipe, run = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "trainer": trainer, "output_dir": str(run)}))
    metrics, launch = run / "metrics.jsonl", []
    top = subprocess.Popen(
        [sys.executable, "-m", "grpo_cli", "train", str(recipe), "--num-processes", "2"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (metrics.exists() and metrics.read_text().strip()):
            assert top.poll() is None and time.monotonic() < deadline, "no first step"
            time.sleep(0.1)
        launch += _descendants(top.pid)
        assert len(launch) >= 3, launch  # the launcher and two workers
        os.kill(top.pid, signal.SIGKILL)
        top.wait()
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in launch) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in launch if _running(pid)]
        size = metrics.stat().st_size
        time.sleep(2)
        assert metrics.stat().st_size == size  # nothing writes the run any more
        assert not list(run.glob("checkpoint-*"))  # no checkpoint saved without the lock
    finally:
        for pid in [top.pid, *launch]:  # whatever is left
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
