"""The lock on a run directory: `run.lock`, held (an exclusive flock, with the holder's pid in it) by the one process
that writes the run, for the whole run. The OS drops it when that process dies, so a crash never leaves a stale
lock. A lock that guards no run (a command stopped before it wrote one) goes when it is released, and so does a
directory this process made for the run, when that leaves it empty.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from grpo_cli.errors import UserError
from grpo_cli.run_files import MARKER_FILE

LOCK = "run.lock"
LOCK_ENV = (
    "GRPO_CLI_RUN_LOCK"  # set while a process holds the lock: the processes it launches must not take it
)


class RunLock:
    """The exclusive lock on a run directory (`run.lock`, flock): one writer at a time, released by the OS.

    A signal may stop `acquire` anywhere (it raises `interrupts.Interrupted`): each step is recorded as it is
    taken, so that `release` undoes what was done, and a directory holding only `run.lock` is never left behind.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK
        self.fd: int | None = None
        self.locked = False
        self.created_directory = False

    def acquire(self) -> None:
        import fcntl

        if os.environ.get(LOCK_ENV) == str(self.directory.resolve()):
            return  # the grpo-cli process that launched this one holds it
        self.created_directory = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot create {self.path}: {err.strerror or err}") from err
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd, self.created_directory = None, False
            raise UserError(
                f"{self.directory} is in use by another grpo-cli process (pid {holder}); wait for it to end, "
                "stop it, or write elsewhere with --output-dir"
            ) from None
        self.locked = True
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        os.environ[LOCK_ENV] = str(self.directory.resolve())

    def release(self) -> None:
        """Unlock; the lock file goes unless it guards a run (its marker is there), and a directory this process
        created goes too when that leaves it empty."""
        import fcntl

        if self.fd is None:
            if self.created_directory:  # stopped between making the directory and opening the lock
                with contextlib.suppress(OSError):
                    self.directory.rmdir()
            return
        if not self.locked:  # stopped between opening the lock and taking it: ours if nobody else holds it
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.locked = True
        with contextlib.suppress(OSError):
            if self.locked and not (self.directory / MARKER_FILE).exists():  # it guards no run: it goes
                self.path.unlink()
                if self.created_directory and not any(self.directory.iterdir()):
                    self.directory.rmdir()
        os.close(self.fd)
        self.fd = None
        self.locked = False
        if os.environ.get(LOCK_ENV) == str(self.directory.resolve()):
            os.environ.pop(LOCK_ENV, None)


_held_locks: list[RunLock] = []  # held until the command ends (`release_locks`) or the process dies


def lock_run(directory: Path) -> RunLock:
    lock = RunLock(directory)
    _held_locks.append(lock)  # first: a signal during `acquire` still finds it to release
    try:
        lock.acquire()
    except UserError:
        _held_locks.remove(lock)
        raise
    return lock


def release_locks() -> None:
    while _held_locks:
        _held_locks.pop().release()
