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
import threading
import time
from pathlib import Path

# Set for the processes `relaunch` starts: the grpo-cli process above them forwards signals, reports the exit code
# and holds the run lock (`interrupts` reads it); and the command that was typed, for the resume hint.
FORWARDED_ENV = "GRPO_CLI_SIGNALS_FORWARDED"
COMMAND_ENV = "GRPO_CLI_COMMAND"
# The pid of that grpo-cli process, which holds the run lock: a launched process stops at once when it is gone.
HOLDER_ENV = "GRPO_CLI_LOCK_HOLDER"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
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
        HOLDER_ENV: str(os.getpid()),
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
        launcher = subprocess.Popen(
            launch_command(spec, argv, config_file),
            env=env,
            start_new_session=True,
            preexec_fn=_death_signal_setter(os.getpid()),  # a SIGKILL here must not leave the launch running
        )
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


def _death_signal_setter(parent: int, signum: int = signal.SIGTERM):
    """A function for `Popen(preexec_fn=...)`: the child gets `signum` when `parent` dies (Linux; else None).

    libc is loaded here, before the fork: the child runs only the prctl call and a pid check (the parent may have
    died before the call, which the kernel would then never report)."""
    prctl = _prctl()
    if prctl is None:
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + int(signum))

    return set_death_signal


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_guarded = False  # the watchdog runs (once per process: a pipeline trains several stages)


def guard_worker() -> None:
    """In a process that `relaunch` started: die with its parent (the launcher), and stop at once when the grpo-cli
    process holding the run lock is gone, so that no worker goes on writing a run whose lock nobody holds.

    Linux: the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG); on every platform a watchdog thread
    checks the lock holder and the parent every half second."""
    global _guarded
    if _guarded or HOLDER_ENV not in os.environ or not launched():
        return
    _guarded = True
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    parent = os.getppid()
    if holder_gone():  # it died before the watchdog started
        _stop_orphan()
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="grpo-cli-lock-watchdog").start()


def holder_gone() -> bool:
    """Whether this process was launched by a grpo-cli process holding the run lock that has since died."""
    holder = os.environ.get(HOLDER_ENV)
    return holder is not None and holder.isdigit() and not _alive(int(holder))


def _alive(pid: int) -> bool:
    if Path("/proc/self/stat").exists():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"  # a killed process stays a zombie until its parent reaps it: dead all the same
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent or holder_gone():
            _stop_orphan()


def _stop_orphan() -> None:
    """Exit now, writing nothing more: the run's lock holder is gone."""
    with contextlib.suppress(Exception):
        pid = os.environ.get(HOLDER_ENV)
        sys.stderr.write(
            f"grpo-cli: the process holding the run lock (pid {pid}) is gone; stopping this one\n"
        )
        sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)
