"""What the `code` reward's sandbox costs per program, next to a plain `subprocess.run([python, "-c", "pass"])`.

    python benchmarks/code_sandbox.py                 # 20 runs of each, in this process
    python benchmarks/code_sandbox.py --runs 50 --hold-gb 2

Rows: a plain subprocess of the sandbox's interpreter; `sandbox.run_here` (forks this process, rlimits, network
namespace, own uid, temporary directory, cleanup); `sandbox_server.run` (the same, done by the helper process:
what the reward uses); and `code_runner.check` of a passing completion with 3 asserts (extraction, the harness,
parsing its report). Then the plain and the two sandbox rows again after this process has allocated --hold-gb
GB (as a trainer holds its model): forking a big process is what the helper avoids. Medians of --runs, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from grpo_cli import code_runner, sandbox, sandbox_server

COMPLETION = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(0, 0) == 0"


def median_ms(fn, runs: int) -> float:
    fn()  # warm: the probe, the helper's start, the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def rows(runs: int, label: str) -> list[tuple[str, float]]:
    python = sandbox.isolation().python
    pass_ = ["python", "-I", "-c", "pass"]
    return [
        (
            f"plain subprocess.run([python, -I, -c, pass]){label}",
            median_ms(lambda: subprocess.run([python, "-I", "-c", "pass"], check=True), runs),
        ),
        (f"sandbox.run_here (fork of this process){label}", median_ms(lambda: sandbox.run_here(pass_), runs)),
        (f"sandbox_server.run (the helper forks){label}", median_ms(lambda: sandbox_server.run(pass_), runs)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hold-gb", type=float, default=1.0)
    args = parser.parse_args()
    print(f"isolation: {sandbox.isolation()}")
    table = rows(args.runs, "")
    check = median_ms(lambda: code_runner.check(COMPLETION, TESTS, code_runner.Options(workers=1)), args.runs)
    table.append(("code_runner.check, 3 asserts, one program", check))
    held = bytearray(int(args.hold_gb * 2**30))
    for i in range(0, len(held), 4096):  # touched, so its pages are mapped as a model's would be
        held[i] = 1
    table += rows(args.runs, f", holding {args.hold_gb:g} GB")
    base = table[0][1]
    print("| what | median ms | x plain |\n|---|---|---|")
    for name, ms in table:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
