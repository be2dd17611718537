"""Rewards with `isolation: process`: each runs in a worker process of its own, started once and reused.

`scoring.RewardCall` sends each batch to its reward's `RewardWorker` instead of calling the function. The worker is
a fresh interpreter (`python -m grpo_cli.reward_workers`: nothing of the trainer's state, threads or CUDA context
is inherited, and unlike multiprocessing's `spawn` it never runs the caller's `__main__` again) that binds the
reward from its recipe entry once (its name and `args`, as the parent did: nothing but the entry is pickled) and
then scores batch after batch, over a pair of pipes of its own (what the reward prints goes to stderr). So that:

- a `timeout` stops the call for real: the worker (and anything it started) is killed, the call counts as an error
  under the entry's `on_error`, and the next call starts a new worker;
- a crash (a segfault, `os._exit`, the kernel's OOM killer) ends the worker and costs that call only;
- the worker dies with the process that started it (`PR_SET_PDEATHSIG` on Linux, and a thread that watches its
  parent everywhere), ignores the terminal's Ctrl-C (the trainer decides when to stop), and `shutdown_all`
  (train, eval and `rewards test` call it when they finish; also at exit) ends every worker.

What a reward logs through `log_metric` and `log_extra` in the worker is recorded and replayed in the caller, so
it reaches TRL's metrics and completions table as an in-process reward's does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

from grpo_cli import descendants

START_TIMEOUT_S = 300.0  # to start a worker and bind its reward (an import of torch on a loaded machine)
_STOP_GRACE_S = 2.0
_PARENT_POLL_S = 0.5
_LOGGERS = ("log_metric", "log_extra")

_live: set[RewardWorker] = set()
_exit_hook = False


class WorkerLost(Exception):
    """The call did not come back: it ran over its timeout (the worker was killed) or the worker died."""


class BadResult(Exception):
    """What the reward returned could not be sent back from its worker (it does not pickle)."""


class RewardRaised(Exception):
    """The reward raised in its worker: `what` is the exception in one line, `where` the file and line it came from."""

    def __init__(self, what: str, where: str):
        super().__init__(what)
        self.what, self.where = what, where


class RewardWorker:
    """One reward's worker process, started on the first call and again after one is lost."""

    def __init__(self, entry, name: str):
        self.entry, self.name = entry, name
        self.process = None
        self._conn = None
        self._lock = threading.Lock()  # one call at a time on one worker

    def call(self, prompts, completions, kwargs: dict, timeout: float | None):
        """The reward's raw result for one batch, after replaying what it logged onto `kwargs`' loggers.

        Raises RewardRaised when the reward raised, WorkerLost when the call timed out or the worker died."""
        loggers = {k: kwargs[k] for k in _LOGGERS if callable(kwargs.get(k))}
        sent = {k: _portable(k, v) for k, v in kwargs.items() if k not in loggers}
        with self._lock:
            self._start()
            try:
                self._conn.send((prompts, completions, sent, sorted(loggers)))
            except (OSError, EOFError):  # it died while idle: once more, on a new one
                self.stop()
                self._start()
                self._conn.send((prompts, completions, sent, sorted(loggers)))
            reply = self._reply(timeout)
        kind, *rest = reply
        logged = rest[-1]
        for logger, args in logged:
            loggers[logger](*args)
        if kind == "raised":
            raise RewardRaised(rest[0], rest[1])
        if kind == "unsendable":
            raise BadResult(
                f"a {rest[0]} that cannot be sent back from its worker process, not a list with one score per "
                "completion"
            )
        return rest[0]

    def _reply(self, timeout: float | None):
        if not self._conn.poll(timeout):
            self.stop(kill=True)
            raise WorkerLost(f"ran over its timeout of {timeout:g} s (its worker process was killed)")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            how = self._ended()
            raise WorkerLost(f"ended its worker process ({how})") from None

    def _start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.stop()
        to_worker, from_worker = os.pipe(), os.pipe()
        theirs = (to_worker[0], from_worker[1])
        command = [sys.executable, "-m", "grpo_cli.reward_workers", *map(str, (*theirs, os.getpid()))]
        try:
            # stdout=2: what the reward prints goes to stderr, never into a command's output (`rewards test --json`)
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=2, pass_fds=theirs)
        finally:
            for fd in theirs:  # closed here, so that the worker's death reads as end-of-file
                os.close(fd)
        self.process = process
        self._conn = _Pair(
            Connection(from_worker[0], writable=False), Connection(to_worker[1], readable=False)
        )
        _track(self)
        mine = self._conn
        mine.send((self.entry, self.name, sys.path))
        if not mine.poll(START_TIMEOUT_S):
            self.stop(kill=True)
            raise WorkerLost(f"did not start in its worker process within {START_TIMEOUT_S:g} s")
        try:
            kind, detail = mine.recv()
        except (EOFError, OSError):
            raise WorkerLost(f"ended its worker process while loading ({self._ended()})") from None
        if kind != "ready":
            self.stop()
            raise WorkerLost(f"could not be loaded in its worker process: {detail}")

    def _ended(self) -> str:
        process = self.process
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_GRACE_S)
        code = process.returncode
        self.stop(kill=True)
        if code is None:
            return "it closed its connection"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self, kill: bool = False) -> None:
        """End the worker: asked to finish (or killed, with what it started, when `kill` or when it does not)."""
        process, conn = self.process, self._conn
        self.process, self._conn = None, None
        _live.discard(self)
        if process is None:
            return
        if not kill and process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_STOP_GRACE_S)
        if process.poll() is None:
            descendants.kill_tree(process.pid)
        process.wait()
        conn.close()


class _Pair:
    """Two one-way connections (to and from a worker) used as one."""

    def __init__(self, reader: Connection, writer: Connection):
        self.reader, self.writer = reader, writer

    def send(self, obj) -> None:
        self.writer.send(obj)

    def recv(self):
        return self.reader.recv()

    def poll(self, timeout: float | None) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        for conn in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                conn.close()


def _track(worker: RewardWorker) -> None:
    global _exit_hook
    _live.add(worker)
    if not _exit_hook:
        atexit.register(shutdown_all)
        _exit_hook = True


def shutdown_all() -> None:
    """End every worker this process started (train, eval and `rewards test` call it when they finish)."""
    for worker in list(_live):
        worker.stop()


def live_pids() -> list[int]:
    """The process ids of the workers running now."""
    return [w.process.pid for w in list(_live) if w.process is not None and w.process.poll() is None]


def _portable(name: str, value):
    """A keyword argument as it travels to the worker: `trainer_state` (transformers' TrainerState) as a namespace of
    its plain attributes, so that the worker never imports transformers to read it (seconds, on every new worker);
    the rest as it is."""
    if name != "trainer_state" or value is None or isinstance(value, SimpleNamespace):
        return value
    fields = vars(value) if hasattr(value, "__dict__") else {}
    return SimpleNamespace(**{k: v for k, v in fields.items() if _pickles(v)})


def _pickles(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


# ---- in the worker ----


def _serve(conn, parent: int) -> None:
    """The worker's main loop: bind the reward, then score each batch sent until told to stop (None)."""
    descendants.die_with_parent()
    _watch_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the caller decides
    from grpo_cli import reward_binding
    from grpo_cli.errors import describe

    try:
        entry, name, path = conn.recv()
        sys.path[:] = path  # the caller's: a module reward found there is found here

        fn = reward_binding.bind(entry, f"reward {name!r}").fn
    except BaseException as err:
        conn.send(("failed", describe(err)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        prompts, completions, kwargs, loggers = message
        logged: list = []
        for logger in loggers:
            kwargs[logger] = _recorder(logger, logged)
        try:
            result = awaited(fn(prompts=prompts, completions=completions, **kwargs))
        except BaseException as err:
            conn.send(("raised", describe(err), _raised_at(err), logged))
            continue
        try:
            conn.send(("ok", result, logged))
        except Exception:  # pickling failed before anything was written
            conn.send(("unsendable", type(result).__name__, logged))


def awaited(result):
    """An `async def` reward's scores: its coroutine run to the end on an event loop of its own (TRL 1.12 runs async
    rewards too; one that awaits many calls, a judge's, gathers them itself). A plain reward's result as it is."""
    if not inspect.isawaitable(result):
        return result

    async def wait():
        return await result

    return asyncio.run(wait())


def _recorder(logger: str, logged: list):
    def record(*args):
        logged.append((logger, args))

    return record


def _raised_at(err: BaseException) -> str:
    frames = [
        f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).name != "reward_workers.py"
    ]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone: where the parent-death signal is not available, or missed (the parent died
    before it was set, or the thread that started this process ended)."""

    def watch():
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(0)

    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    reads, writes, parent_pid = map(int, sys.argv[1:4])
    for fd in (reads, writes):  # not into what the reward starts
        os.set_inheritable(fd, False)
    _serve(_Pair(Connection(reads, writable=False), Connection(writes, readable=False)), parent_pid)
