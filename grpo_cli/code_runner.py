"""A completion's program run against its tests in the sandbox: the `code` reward's scoring, as plain functions.

`check(completion, tests, options)` returns a `CodeResult`: the score (fraction of tests passed, or 1.0/0.0
all-or-nothing), a verdict (one of `VERDICTS`) and details (the first failing test and why). `check_many` does
the same for a batch, running programs in parallel on a thread pool (each thread waits on one subprocess).

Tests come in two forms. A string (or a list of strings) is Python test code: its top-level `assert` statements are the tests, run one
after another in the program's namespace after the program (other top-level statements, e.g. imports, run in
order between them). A list of `{"input": ..., "output": ...}` pairs runs the program once per pair, the input
on stdin, and compares stdout with the output, both stripped.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from grpo_cli import sandbox, sandbox_server

VERDICTS = ("passed", "failed", "timeout", "memory", "crash", "no_code")
EXTRACT = ("last_block", "first_block", "whole")
# What a language needs: its fence tags, the file a program goes in, and how to run that file.
LANGUAGES = {"python": {"tags": ("python", "py", "python3"), "file": "solution.py", "run": ["python", "-I"]}}
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)

# Runs the program, then each test statement, in one namespace; reports each assert on a duplicate of stdout
# (a program that closes or replaces sys.stdout does not silence it) as `<token> <index> <status> <detail>`.
_HARNESS = r"""
import json, os, sys
def _harness():
    out = os.dup(1)
    token = sys.argv[1]
    def report(index, status, detail=""):
        os.write(out, ("\n%s %d %s %s\n" % (token, index, status, json.dumps(detail[:300]))).encode())
    with open("_tests.json") as f:
        statements = json.load(f)
    with open("solution.py") as f:
        source = f.read()
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except MemoryError:
        return report(-1, "memory", "MemoryError in the program")
    except BaseException as err:
        return report(-1, "crash", "the program raised %s: %s" % (type(err).__name__, err))
    for index, (is_test, statement) in enumerate(statements):
        try:
            exec(compile(statement, "tests", "exec"), namespace)
        except MemoryError:
            status, detail = "memory", "MemoryError"
        except AssertionError as err:
            status, detail = "failed", str(err)
        except BaseException as err:
            status, detail = "failed", "%s: %s" % (type(err).__name__, err)
        else:
            status, detail = "passed", ""
        if is_test:
            report(index, status, detail)
_harness()
"""


@dataclass(frozen=True)
class Options:
    """How to run and score: the `code` reward's arguments."""

    timeout: float = 5.0
    memory_mb: int = 512
    partial_credit: bool = True
    language: str = "python"
    extract: str = "last_block"
    workers: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.timeout, int | float) and 0 < self.timeout <= 600):
            problems.append(f"`timeout` must be seconds in (0, 600], got {self.timeout!r}")
        if not (isinstance(self.memory_mb, int) and 32 <= self.memory_mb <= 1_048_576):
            problems.append(f"`memory_mb` must be a whole number of MB, at least 32, got {self.memory_mb!r}")
        if not isinstance(self.partial_credit, bool):
            problems.append(f"`partial_credit` must be true or false, got {self.partial_credit!r}")
        if self.language not in LANGUAGES:
            problems.append(
                f"`language` {self.language!r} is not supported; supported: {', '.join(LANGUAGES)}"
            )
        if self.extract not in EXTRACT:
            problems.append(f"`extract` must be one of {', '.join(EXTRACT)}, got {self.extract!r}")
        if self.workers is not None and not (isinstance(self.workers, int) and 1 <= self.workers <= 64):
            problems.append(f"`workers` must be a whole number from 1 to 64, got {self.workers!r}")
        if problems:
            raise ValueError("code_reward: " + "; ".join(problems))

    @property
    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(timeout=float(self.timeout), memory_mb=self.memory_mb)


@dataclass(frozen=True)
class CodeResult:
    score: float
    verdict: str  # one of VERDICTS
    details: str  # "3/4 tests passed; first failing: ..." or why there is nothing to run


def default_workers() -> int:
    """The cores training leaves free: all usable ones minus one per training process on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(sandbox.MAX_SLOTS, cores - int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def extract_code(text: str, language: str = "python", extract: str = "last_block") -> str | None:
    """The program in a completion: its last (or first) fenced block tagged with the language or untagged, or
    the whole text (`extract="whole"`). None when there is none.

    >>> from grpo_cli.code_runner import extract_code
    >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("no code here") is None
    True
    """
    if extract == "whole":
        return text if text.strip() else None
    tags = LANGUAGES[language]["tags"]
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in ("", *tags)]
    blocks = [b for b in blocks if b.strip()]
    if not blocks:
        return None
    return blocks[-1] if extract == "last_block" else blocks[0]


def parse_tests(tests) -> tuple[str, list]:
    """("asserts", [(is_test, statement source), ...]) or ("stdio", [(input, output), ...]); ValueError when the
    tests are in neither form (the dataset's fault, not the completion's). A list of strings (MBPP's
    `test_list`) is test code too, one string after another."""
    if isinstance(tests, list | tuple) and tests and all(isinstance(t, str) for t in tests):
        tests = "\n".join(tests)
    if isinstance(tests, str):
        try:
            tree = ast.parse(tests)
        except SyntaxError as err:
            raise ValueError(f"code_reward: the tests are not valid Python: {err}") from None
        statements = [(isinstance(n, ast.Assert), ast.get_source_segment(tests, n)) for n in tree.body]
        if not any(is_test for is_test, _ in statements):
            raise ValueError(
                "code_reward: the test code has no top-level assert statement (each is one test)"
            )
        return "asserts", statements
    if isinstance(tests, list | tuple) and tests and all(isinstance(t, dict) for t in tests):
        pairs = []
        for t in tests:
            if "input" not in t or "output" not in t:
                raise ValueError(
                    f"code_reward: a stdin/stdout test needs `input` and `output` keys, got {list(t)}"
                )
            pairs.append((str(t["input"]), str(t["output"])))
        return "stdio", pairs
    raise ValueError(
        "code_reward: tests must be a string of Python assert statements (or a list of such strings) or a "
        f"non-empty list of {{input, output}} pairs, got {type(tests).__name__}"
    )


def check(completion_text: str, tests, options: Options = Options()) -> CodeResult:
    """Score one completion's program against its tests (see the module docstring)."""
    return check_many([completion_text], [tests], options)[0]


def check_many(texts: list[str], tests: list, options: Options = Options()) -> list[CodeResult]:
    """`check` for a batch: every program run (one per completion for assert tests, one per pair for stdio
    tests) is submitted to a pool of `options.workers` threads (default `default_workers()`)."""
    parsed = [parse_tests(t) for t in tests]  # a bad test fails the batch before anything runs
    programs = [extract_code(text, options.language, options.extract) for text in texts]
    jobs = []  # (completion index, test index or None, files, stdin)
    for i, (program, (kind, items)) in enumerate(zip(programs, parsed, strict=True)):
        if program is None:
            continue
        if kind == "asserts":
            jobs.append((i, None, {"_tests.json": json.dumps(items), "_harness.py": _HARNESS}, ""))
        else:
            jobs += [(i, k, {}, stdin) for k, (stdin, _) in enumerate(items)]
    language = LANGUAGES[options.language]
    token = secrets.token_hex(8)

    def run(job):
        i, _, files, stdin = job
        argv = (
            [*language["run"], "_harness.py", token]
            if job[1] is None
            else [*language["run"], language["file"]]
        )
        return sandbox_server.run(
            argv, files={language["file"]: programs[i], **files}, stdin=stdin, limits=options.limits
        )

    workers = min(options.workers or default_workers(), max(1, len(jobs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-sandbox") as pool:
        outcomes = list(pool.map(run, jobs))
    by_completion: dict[int, list] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        by_completion.setdefault(job[0], []).append((job[1], outcome))
    results = []
    for i, (kind, items) in enumerate(parsed):
        if programs[i] is None:
            results.append(CodeResult(0.0, "no_code", "no code block found in the completion"))
        elif kind == "asserts":
            results.append(_judge(_assert_statuses(items, by_completion[i][0][1], token), options))
        else:
            runs = sorted(by_completion[i], key=lambda pair: pair[0])
            statuses = [_stdio_status(items[k], outcome) for k, outcome in runs]
            results.append(_judge(statuses, options))
    return results


def _run_status(outcome: sandbox.Outcome) -> tuple[str, str] | None:
    """The verdict of a run that did not end normally, or None."""
    if outcome.timed_out:
        return "timeout", "ran past its time limit (wall-clock or CPU seconds)"
    if outcome.output_over:
        return "crash", "killed for writing more output than allowed"
    if outcome.memory_error:
        return "memory", "ran out of memory (MemoryError)"
    if outcome.returncode < 0:
        return "crash", f"killed by signal {-outcome.returncode}"
    return None


def _assert_statuses(items, outcome: sandbox.Outcome, token: str) -> list[tuple[str, str]]:
    """(status, detail) per assert, from the harness's report lines; those it never reported take the run's end."""
    tests = [(index, statement) for index, (is_test, statement) in enumerate(items) if is_test]
    reported: dict[int, tuple[str, str]] = {}
    for line in outcome.stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == token:
            try:
                reported[int(parts[1])] = (parts[2], json.loads(parts[3]))
            except ValueError:
                continue
    if -1 in reported:  # the program itself failed before any test ran
        status, detail = reported[-1]
        return [(status, detail)] * len(tests)
    ended = _run_status(outcome) or ("crash", f"exited with code {outcome.returncode} before this test ran")
    statuses = []
    for index, statement in tests:
        status, detail = reported.get(index, ended)
        if status == "failed":
            detail = f"{statement}" + (f" ({detail})" if detail else "")
        statuses.append((status, detail))
    return statuses


def _stdio_status(pair: tuple[str, str], outcome: sandbox.Outcome) -> tuple[str, str]:
    ended = _run_status(outcome)
    if ended is not None:
        return ended
    if outcome.returncode != 0:
        last = outcome.stderr.strip().splitlines()[-1:] or [f"exit code {outcome.returncode}"]
        return "crash", f"input {pair[0]!r}: {last[0][:200]}"
    if outcome.stdout.strip() == pair[1].strip():
        return "passed", ""
    return "failed", f"input {pair[0]!r}: expected {pair[1].strip()!r}, got {outcome.stdout.strip()[:200]!r}"


def _judge(statuses: list[tuple[str, str]], options: Options) -> CodeResult:
    passed = sum(status == "passed" for status, _ in statuses)
    total = len(statuses)
    if passed == total:
        return CodeResult(1.0, "passed", f"{total}/{total} tests passed")
    first = next((i, s) for i, s in enumerate(statuses) if s[0] != "passed")
    score = passed / total if options.partial_credit else 0.0
    return CodeResult(
        score, first[1][0], f"{passed}/{total} tests passed; test {first[0] + 1}: {first[1][1]}"
    )
