"""Counts over the validate fuzz corpus (tests/fuzz_corpus.py): inputs, tracebacks, runs past 5 s, wrong exit codes
and must-reject cases accepted; issue 23 asks for these before and after.

    PYTHONPATH=. python benchmarks/validate_fuzz_counts.py [--kind issue23] [-v]

A traceback is a crash or "Traceback" in stderr; past 5 s is over TIMEOUT_S of CPU time (or a hang); a wrong exit
code is any code but 0 or 2, or not the case's expected one; must-reject accepted is exit 0 where 2 is expected.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from tests.fuzz_corpus import TIMEOUT_S, corpus, run_case


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", help="only the cases of this kind (issue23, junk, override, ...)")
    parser.add_argument("-v", action="store_true", help="print every case that counts against validate")
    args = parser.parse_args()
    with contextlib.suppress(Exception):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway case fails instead of swapping
    cases = [c for c in corpus() if args.kind is None or c.kind == args.kind]
    counts = dict.fromkeys(
        ["inputs", "tracebacks", "past 5 s", "wrong exit codes", "must-reject accepted", "wrong message"], 0
    )
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_case(case, Path(tmp))
        found = []
        if outcome.code == "crash" or "Traceback" in outcome.stderr:
            found.append("tracebacks")
        if outcome.code == "hang" or outcome.seconds > TIMEOUT_S:
            found.append("past 5 s")
        if outcome.code not in (0, 2) or (case.exit is not None and outcome.code != case.exit):
            found.append("wrong exit codes")
        if case.exit == 2 and outcome.code == 0:
            found.append("must-reject accepted")
        if case.says is not None and outcome.code == 2 and case.says not in outcome.stderr:
            found.append("wrong message")
        counts["inputs"] += 1
        for name in found:
            counts[name] += 1
        if found and args.v:
            print(
                f"{','.join(found)}: {case.id!r} -> {outcome.code} {outcome.seconds:.1f}s {outcome.stderr.strip()[:300]!r}"
            )
    print(", ".join(f"{name}: {n}" for name, n in counts.items()))


if __name__ == "__main__":
    main()
