"""The processes a grpo-cli process started, however deep: found, killed with it, and never left behind.

A reward (or anything it calls) may start a process that outlives the call: `subprocess.Popen(["sleep", "300"])`
left running holds the caller's stdout and stderr open, so a script that reads grpo-cli's output waits minutes
after grpo-cli has exited. `adopt_orphans` (called once by the CLI's `main`) makes this process a child subreaper
on Linux (`prctl(PR_SET_CHILD_SUBREAPER)`): a descendant whose parent exits is re-parented here rather than to
init, so it stays findable, and at exit every descendant still running is killed. Each process of a
multi-process launch does the same for its own descendants only: none ever signals a sibling or a parent.

What this cannot reach: a descendant that started a new session *and* was re-parented before this process became
a subreaper, and anything left behind when this process dies by SIGKILL or `os._exit` (no exit handler runs; the
reward worker processes of `isolation: process` die with their parent by a parent-death signal of their own).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_GRACE_S = 1.0  # SIGTERM first; what is still running after this gets SIGKILL

_adopting = False


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def adopt_orphans() -> bool:
    """Become a child subreaper (Linux) and kill every descendant still running at exit. True where it took."""
    global _adopting
    if _adopting:
        return True
    if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
        return False
    _adopting = True
    atexit.register(kill_descendants)
    return True


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when the thread that started it exits (Linux). True where it
    took; the caller should still check that its parent is alive (it may have died before this call)."""
    return _prctl(_PR_SET_PDEATHSIG, int(sig))


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc; empty where there is none)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            # The command name may hold spaces and parentheses: the fields after its last ')' are fixed.
            table[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    return table


def descendants(pid: int | None = None) -> list[int]:
    """Every process below `pid` (default: this one), parents before their children."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            if child != root and child not in found:
                found.append(child)
                queue.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it, found before any is killed (a killed parent's children move)."""
    below = descendants(pid)
    _signal_all([pid, *below], signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2 :].split()[0] != "Z"


def kill_descendants() -> None:
    """SIGTERM every descendant of this process still running, then SIGKILL what is left after a short grace."""
    left = descendants()
    if not left:
        return
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline:
        left = [pid for pid in left if _running(pid)]
        if not left:
            return
        time.sleep(0.05)
    _signal_all(descendants(), signal.SIGKILL)
