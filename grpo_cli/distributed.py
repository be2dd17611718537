"""Several processes through accelerate's launcher (DDP; gloo on a CPU, NCCL on GPUs).

`grpo-cli train RECIPE --num-processes N` re-runs the same command under `accelerate launch`; running it under
`accelerate launch -m grpo_cli train ...` or `torchrun -m grpo_cli train ...` directly works the same way. Each
process reads WORLD_SIZE/RANK from the environment; only rank 0 prepares the output directory and writes
recipe.yaml, metrics.jsonl and summary.json.
"""

from __future__ import annotations

import os
import subprocess
import sys


def launched() -> bool:
    """Whether this process was started by a distributed launcher."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def launch_command(num_processes: int, argv: list[str]) -> list[str]:
    """`accelerate launch` running `python -m grpo_cli ARGV` in `num_processes` processes on this machine."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        # accelerate's multi-process launcher (torchrun underneath); on a CPU-only machine the processes
        # run DDP over gloo because the trainer is told `use_cpu` (see models.hardware_defaults).
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "grpo_cli",
        *argv,
    ]


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


def relaunch(num_processes: int) -> int:
    """Run this command again in `num_processes` processes; return their exit code."""
    argv = _argv_without_num_processes(sys.argv[1:])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(launch_command(num_processes, argv), env=env).returncode
