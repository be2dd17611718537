"""Per-call overhead of `isolation: process` against in-process, on a trivial reward and a batch of completions.

    python benchmarks/reward_isolation.py            # --batch 16 --calls 200 --runs 3

Both ways score the same batches through scoring.RewardCall, taking turns, after a warm-up call (the worker's start
is measured on its own). Prints one table: the median seconds per call of each, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REWARD = "def trivial(completions, answer, **kwargs):\n    return [float(c == a) for c, a in zip(completions, answer)]\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    from grpo_cli import reward_binding, reward_workers, scoring
    from grpo_cli.recipe import RewardEntry

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trivial.py"
        path.write_text(REWARD)
        calls = {}
        for isolation in ("in_process", "process"):
            entry = RewardEntry(name=f"{path}:trivial", isolation=isolation)
            calls[isolation] = scoring.RewardCall(reward_binding.bind(entry, "rewards[0]"))
        prompts = [f"{i}+{i}=" for i in range(options.batch)]
        completions = [str(2 * i) for i in range(options.batch)]
        log = scoring.RewardLog()
        kwargs = scoring.reward_kwargs(
            {"answer": completions}, [[1, 2]] * options.batch, scoring.run_state(3, 10), log
        )
        started = time.perf_counter()
        calls["process"].score(prompts, completions, kwargs)  # starts the worker
        start_s = time.perf_counter() - started
        calls["in_process"].score(prompts, completions, kwargs)
        per_call = {k: [] for k in calls}
        for _ in range(options.runs):
            for isolation, call in calls.items():
                began = time.perf_counter()
                for _ in range(options.calls):
                    call.score(prompts, completions, kwargs)
                per_call[isolation].append((time.perf_counter() - began) / options.calls)
        reward_workers.shutdown_all()

    medians = {k: statistics.median(v) for k, v in per_call.items()}
    print(
        f"trivial reward, {options.batch} completions a call, {options.calls} calls x {options.runs} runs (median); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print("\n| isolation | ms per call | per completion (us) | ratio |\n|---|---:|---:|---:|")
    for isolation, seconds in medians.items():
        ratio = seconds / medians["in_process"]
        print(f"| {isolation} | {seconds * 1e3:.3f} | {seconds / options.batch * 1e6:.1f} | {ratio:.1f}x |")
    print(f"\nstarting a worker (first call, binding the reward in a new interpreter): {start_s:.2f} s")


if __name__ == "__main__":
    main()
