"""What held-out evaluation during training costs: the addition recipe trained without it and with
`eval.every=50` (11 held-out prompts, greedy), one after the other in fresh subprocesses.

    python benchmarks/eval_during_training.py                 # the recipe's 1000 steps
    python benchmarks/eval_during_training.py --steps 200

The table gives each run's training wall time (summary.json's `wall_time_s`), the evaluations it made and the seconds they took
(summary.json's `held_out_eval`), and the overhead: the difference of the wall times, and its share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def train(steps: int, out: Path, every: int | None) -> tuple[float, dict]:
    command = [sys.executable, "-m", "grpo_cli", "train", "addition", f"trainer.max_steps={steps}"]
    command += [f"trainer.save_steps={steps}", "-o", str(out)]
    if every is not None:
        command.append(f"eval.every={every}")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    summary = json.loads((out / "summary.json").read_text())
    return summary["wall_time_s"], summary.get("held_out_eval") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        without, _ = train(options.steps, Path(tmp) / "without", None)
        with_eval, held_out = train(options.steps, Path(tmp) / "with", options.every)
    print(f"addition, {options.steps} steps, eval.every={options.every}")
    print("| run | wall time (s) | evaluations | evaluation time (s) |")
    print("|---|---|---|---|")
    print(f"| without | {without:.1f} | 0 | 0 |")
    print(f"| with | {with_eval:.1f} | {held_out.get('evaluations')} | {held_out.get('seconds')} |")
    overhead = with_eval - without
    print(
        f"overhead: {overhead:+.1f} s ({overhead / without:+.1%}); evaluation itself {held_out.get('seconds')} s"
    )


if __name__ == "__main__":
    main()
