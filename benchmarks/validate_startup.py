"""How long `grpo-cli validate addition` takes from a cold process, next to `python -c pass` and `grpo-cli --help`.

    python benchmarks/validate_startup.py                   # this checkout, 5 runs of each command
    python benchmarks/validate_startup.py --runs 9 --tree /tmp/old-checkout --tree .

Each command runs in a fresh `python` with PYTHONPATH set to the tree's root, the trees' runs interleaved round
by round, so a machine that is busier for a while slows every column alike; PYTHONDONTWRITEBYTECODE is unset
for them, so a first untimed run writes the trees' bytecode (into their __pycache__ folders). The table gives each command's
median wall time per tree; the ratio column divides validate's median by --help's. Only medians measured in one
invocation compare (the machine may be shared); `python -X importtime -m grpo_cli validate addition` says where
the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "grpo-cli --help": ["-m", "grpo_cli", "--help"],
    "grpo-cli validate addition": ["-m", "grpo_cli", "validate", "addition"],
}


def wall(tree: Path, args: list[str]) -> float:
    # Bytecode written and read as an installed package's is: without it, compiling grpo_cli's sources
    # costs more than everything measured here.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(tree)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command per tree (default 5)")
    parser.add_argument(
        "--tree", type=Path, action="append", help="a grpo-cli source root (repeatable; default: this one)"
    )
    options = parser.parse_args()
    trees = [t.resolve() for t in options.tree or [Path(__file__).resolve().parents[1]]]
    times: dict[tuple[Path, str], list[float]] = {}
    for tree in trees:  # a first untimed run of each: bytecode compiled, files in the page cache
        for args in COMMANDS.values():
            wall(tree, args)
    for _ in range(options.runs):
        for tree in trees:
            for name, args in COMMANDS.items():
                times.setdefault((tree, name), []).append(wall(tree, args))
    print(f"median wall time of {options.runs} runs, seconds")
    print(f"{'tree':<40}" + "".join(f"{name:>28}" for name in COMMANDS) + f"{'validate / --help':>20}")
    for tree in trees:
        medians = [statistics.median(times[(tree, name)]) for name in COMMANDS]
        row = f"{str(tree)[-40:]:<40}" + "".join(f"{m:>28.3f}" for m in medians)
        print(row + f"{medians[2] / medians[1]:>20.2f}")


if __name__ == "__main__":
    main()
