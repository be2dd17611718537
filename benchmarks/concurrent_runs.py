"""Two trainings at once on a small CPU machine: how much each slows the other, with PyTorch's default OpenMP
threads (which spin while they wait) and with OMP_WAIT_POLICY=PASSIVE (which sleep).

    python benchmarks/concurrent_runs.py                  # the quickstart's SFT stage, 200 steps per run
    python benchmarks/concurrent_runs.py --recipe addition --steps 100

Each case is `grpo-cli train RECIPE trainer.max_steps=N` in fresh subprocesses: one alone, then two started
together, under each wait policy. The table gives the wall time each run reported ("done: N steps in S s") and
its ratio to the same policy's run alone. Measured side by side in one invocation, so the ratios compare and the
absolute times do not (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

POLICIES = {"default (spin)": {}, "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}


def start(recipe: str, steps: int, out: Path, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "grpo_cli", "train", recipe, f"trainer.max_steps={steps}"]
    command += [f"trainer.save_steps={steps * 10}", "-o", str(out)]
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def seconds(process: subprocess.Popen) -> float:
    output = process.communicate()[0]
    found = re.search(r"^done: \d+ steps in (\d+(?:\.\d+)?) s", output, re.MULTILINE)
    if process.returncode != 0 or not found:
        raise SystemExit(f"a run failed (exit {process.returncode}):\n{output[-2000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="pipeline/sft", help="a shipped recipe name or a recipe file")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in POLICIES.items():
            alone = seconds(start(args.recipe, args.steps, Path(tmp) / f"{len(rows)}-alone", env))
            pair = [start(args.recipe, args.steps, Path(tmp) / f"{len(rows)}-pair-{i}", env) for i in (1, 2)]
            together = [seconds(p) for p in pair]
            rows.append((name, alone, together))

    print(f"cores: {os.cpu_count()}, recipe: {args.recipe}, {args.steps} steps a run")
    print("| OpenMP wait policy | one run alone | two at once (each) | slowdown of each |")
    print("|---|---|---|---|")
    for name, alone, together in rows:
        each = " / ".join(f"{t:.0f} s" for t in together)
        ratio = " / ".join(f"{t / alone:.1f}x" for t in together)
        print(f"| {name} | {alone:.0f} s | {each} | {ratio} |")


if __name__ == "__main__":
    main()
