"""Several processes, and several machines, through accelerate's launcher: DDP, DeepSpeed ZeRO or FSDP.

`grpo-cli train RECIPE --num-processes N` (or the recipe's `distributed:` section) re-runs the same command
under `accelerate launch`; running it under `accelerate launch -m grpo_cli train ...` or
`torchrun -m grpo_cli train ...` directly works the same way. Each process reads WORLD_SIZE/RANK from the
environment; only rank 0 prepares the output directory and writes recipe.yaml, metrics.jsonl and summary.json.
Without a GPU the processes run DDP over gloo (the trainer is told `use_cpu`, see devices.hardware_defaults).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Set for the processes `relaunch` starts: the grpo-cli process above them forwards signals, reports the exit code
# and holds the run lock (`interrupts` reads it); and the command that was typed, for the resume hint.
FORWARDED_ENV = "GRPO_CLI_SIGNALS_FORWARDED"
COMMAND_ENV = "GRPO_CLI_COMMAND"
SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what stops a run after a checkpoint (see `interrupts`)
BACKENDS_NEEDING_GPU = {"deepspeed-zero2", "deepspeed-zero3", "fsdp"}


def launched() -> bool:
    """Whether this process was started by a distributed launcher."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (validate stays fast)."""
    return Path("/proc/driver/nvidia/version").exists() or bool(
        os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    )


def wants_launcher(spec) -> bool:
    return (
        spec.num_processes > 1
        or spec.num_machines > 1
        or spec.backend != "ddp"
        or spec.config_file is not None
    )


def check(spec) -> list[str]:
    """What cannot work with this `distributed:` section on this machine."""
    problems = []
    if spec.backend in BACKENDS_NEEDING_GPU and not gpu_present():
        problems.append(f"distributed.backend: {spec.backend} needs GPUs and this machine has none; use ddp")
    if spec.backend.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        problems.append(f"distributed.backend: {spec.backend} needs DeepSpeed: pip install deepspeed")
    if spec.config_file is not None and not Path(spec.config_file).is_file():
        problems.append(f"distributed.config_file: {spec.config_file} does not exist")
    return problems


def accelerate_config(spec) -> dict:
    """An accelerate config for a backend preset (the same settings as TRL's shipped accelerate configs)."""
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "machine_rank": spec.machine_rank,
        "num_machines": spec.num_machines,
        "num_processes": spec.num_processes * spec.num_machines,
        "mixed_precision": "no",  # the trainer's bf16/fp16 settings decide
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if spec.main_process_ip is not None:
        config["main_process_ip"] = spec.main_process_ip
    if spec.main_process_port is not None:
        config["main_process_port"] = spec.main_process_port
    if spec.backend == "ddp":
        config["distributed_type"] = "MULTI_GPU"
    elif spec.backend.startswith("deepspeed"):
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "deepspeed_multinode_launcher": "standard",
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
            "zero3_init_flag": spec.backend == "deepspeed-zero3",
            "zero_stage": 2 if spec.backend == "deepspeed-zero2" else 3,
        }
    else:
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_activation_checkpointing": False,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_reshard_after_forward": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_version": 2,
        }
    return config


def launch_command(spec, argv: list[str], config_file: str | None = None) -> list[str]:
    """`accelerate launch` running `python -m grpo_cli ARGV` as the `distributed:` section says."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        command += ["--config_file", config_file]
    else:
        # accelerate's multi-process launcher (torchrun underneath), which also serves CPU-only machines.
        command += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += ["--num_processes", str(spec.num_processes * spec.num_machines)]
        command += ["--num_machines", str(spec.num_machines), "--machine_rank", str(spec.machine_rank)]
        if spec.main_process_ip is not None:
            command += ["--main_process_ip", spec.main_process_ip]
        port = spec.main_process_port
        if port is None and spec.num_machines == 1:
            port = _free_port()  # not torchrun's fixed default: two runs on one machine would collide
        if port is not None:
            command += ["--main_process_port", str(port)]
    return [*command, "-m", "grpo_cli", *argv]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _argv_without_num_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            out.append(arg)
    return out


def relaunch(spec) -> int:
    """Run this command again under accelerate's launcher; return its exit code.

    The launcher runs in its own session, so a terminal's Ctrl-C reaches this process only; SIGINT and SIGTERM
    sent here are forwarded to the training processes (once each), which stop at the same step after saving a
    checkpoint (see `interrupts`); then this process exits 130 / 143. Anything of the launch still running when
    it ends is killed: no orphan keeps writing into the run.
    """
    import shlex

    import yaml

    argv = [*_argv_without_num_processes(sys.argv[1:]), f"distributed.num_processes={spec.num_processes}"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        FORWARDED_ENV: "1",
        COMMAND_ENV: shlex.join(["grpo-cli", *sys.argv[1:]]),
    }
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        workers = _children(launcher.pid)
        for pid in workers or [launcher.pid]:  # before the workers start, the launcher stops them itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    with tempfile.TemporaryDirectory(prefix="grpo-cli-launch-") as tmp:
        config_file = spec.config_file
        if config_file is None and spec.backend != "ddp":
            config_file = str(Path(tmp) / "accelerate_config.yaml")
            Path(config_file).write_text(yaml.safe_dump(accelerate_config(spec)))
        launcher = subprocess.Popen(launch_command(spec, argv, config_file), env=env, start_new_session=True)
        previous = {signum: signal.signal(signum, forward) for signum in SIGNALS}
        try:
            code = launcher.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(launcher.pid, signal.SIGKILL)  # whatever of the launch is left
            launcher.wait()
    return 128 + received[0] if received else code


def _children(pid: int) -> list[int]:
    """The processes `pid` started (Linux /proc; empty where it cannot tell)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in children.read_text().split()]
    return found
