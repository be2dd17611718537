"""Sandboxed runs started from a small helper process, so that a big process (a trainer holding gigabytes) never
forks per program.

Starting a program under rlimits and another uid needs fork then exec with code in between (`preexec_fn`), and
fork copies the page tables of the process that forks: from a trainer holding a few GB that took ~0.4 s per
program on the reference machine (BENCHMARKS.md), against ~5 ms from a small process. So the first `run` starts a
helper, a plain Python process importing only `grpo_cli.sandbox`, and every run is a request to it: it runs
`sandbox.run_here` on a thread per request and answers with the `Outcome`. The helper reads its requests on
stdin: when this process exits, for any reason, the helper sees end-of-file and exits too.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from grpo_cli import sandbox

_HEADER = struct.Struct("!Q")


def _send(pipe, lock: threading.Lock, message) -> None:
    data = pickle.dumps(message)
    with lock:
        pipe.write(_HEADER.pack(len(data)) + data)
        pipe.flush()


def _receive(pipe):
    header = pipe.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return pickle.loads(pipe.read(_HEADER.unpack(header)[0]))


class _Helper:
    """The helper process and the runs waiting for its answers."""

    def __init__(self) -> None:
        package_parent = str(Path(sandbox.__file__).resolve().parent.parent)
        code = f"import sys; sys.path.insert(0, {package_parent!r}); from grpo_cli import sandbox_server; sandbox_server.serve()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},  # it needs no secret either
            start_new_session=True,  # a Ctrl-C to the trainer's group does not kill runs half-way
        )
        self.lock = threading.Lock()
        self.waiting: dict[int, Future] = {}
        self.next_id = 0
        threading.Thread(target=self._answers, name="sandbox-answers", daemon=True).start()

    def run(self, request: dict) -> sandbox.Outcome:
        future: Future = Future()
        with self.lock:
            self.next_id += 1
            self.waiting[self.next_id] = future
            message = (self.next_id, request)
        self._send(message)
        return future.result()

    def _send(self, message) -> None:
        data = pickle.dumps(message)
        with self.lock:
            self.process.stdin.write(_HEADER.pack(len(data)) + data)
            self.process.stdin.flush()

    def _answers(self) -> None:
        while (answer := _receive(self.process.stdout)) is not None:
            number, outcome = answer
            with self.lock:
                future = self.waiting.pop(number)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        with self.lock:  # the helper died: nothing more will come
            waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            future.set_exception(RuntimeError("the sandbox helper process exited"))


_helper: _Helper | None = None
_helper_lock = threading.Lock()


def run(
    argv: list[str],
    *,
    files: dict[str, str] | None = None,
    stdin: str = "",
    limits: sandbox.Limits | None = None,
) -> sandbox.Outcome:
    """`sandbox.run_here`, done by the helper process (started on first use; again if it died)."""
    global _helper
    iso = sandbox.isolation()
    with _helper_lock:
        if _helper is None or _helper.process.poll() is not None:
            _helper = _Helper()
        helper = _helper
    request = {"argv": argv, "files": files or {}, "stdin": stdin, "limits": limits or sandbox.Limits()}
    return helper.run({**request, "isolation_": iso})


def serve() -> None:
    """The helper's loop: each request on stdin run on a thread of its own, its answer written to stdout."""
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()

    def answer(number: int, request: dict) -> None:
        try:
            outcome = sandbox.run_here(**request)
        except Exception as err:  # reported to the caller, who raises it
            outcome = RuntimeError(f"the sandbox could not run the program: {type(err).__name__}: {err}")
        _send(answers, lock, (number, outcome))

    while (message := _receive(requests)) is not None:
        # Not daemons: at end-of-file the runs under way finish (within their timeout) and clean up first.
        threading.Thread(target=answer, args=message).start()
