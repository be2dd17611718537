"""Running an untrusted program: one process group, in a fresh directory, under limits, with nothing to lose.

`run_here` forks this process; `sandbox_server.run` (what rewards call) has a small helper process do it.

Each `run_here` makes a temporary directory (removed afterwards), starts the program there with a cleared environment
(`PATH`, `LANG`, and `HOME`/`TMPDIR` pointed into the directory), in a new session, under rlimits on CPU seconds,
address space, file size, processes and open files, and kills its whole process group at the wall-clock timeout.
stdout and stderr are read as they come and the program is killed once they pass `Limits.output_bytes`.

What else holds depends on the platform, found once per process by `isolation()`:

- **network**: the program starts in a new network namespace (loopback only, and down): as root by
  `unshare(CLONE_NEWNET)`, otherwise by `unshare(CLONE_NEWUSER | CLONE_NEWNET)` where unprivileged user
  namespaces are allowed. Where neither works the program has the network and `isolation()` says so.
- **user**: run by root, the program runs as a uid of its own (`UID_BASE` + this process's slot), which owns no
  file and no other process: it cannot write or delete the caller's files, read other processes' environments,
  or outlive the run (every process of that uid is killed afterwards, `kill(-1)` as that uid), and
  `RLIMIT_NPROC` (which root ignores) holds. Files it left at the top of the world-writable temporary folders
  are deleted. Run by any other user, the program runs as that user: it can write where the user can, and a
  process that leaves its process group is found by a marker in its environment and killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import queue
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# Uids the programs run as when grpo-cli runs as root: far above any account's, one per (process, slot), so
# that killing "every process of this uid" touches nothing else.
UID_BASE = 0x60000000
MAX_SLOTS = 64
_MARKER = "GRPO_SANDBOX_RUN"  # in each program's environment, to find its escaped processes when not root
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    """What one program run may use."""

    timeout: float = 5.0  # wall-clock seconds; CPU seconds are capped just above it
    memory_mb: int = 512  # address space (RLIMIT_AS)
    file_mb: int = 16  # the largest file it may write (RLIMIT_FSIZE)
    processes: int = 16  # processes and threads of its uid (RLIMIT_NPROC; see the module docstring)
    open_files: int = 64
    output_bytes: int = 1_000_000  # stdout and stderr together


@dataclass
class Outcome:
    """How one run ended. `returncode` is negative for a signal (-9 for a kill), as in `subprocess`."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    output_over: bool = False  # killed for writing more than Limits.output_bytes
    seconds: float = 0.0

    @property
    def memory_error(self) -> bool:
        """The program died of a MemoryError (Python raises it when the address-space limit is hit)."""
        return self.returncode != 0 and "MemoryError" in self.stderr[-2000:]


@dataclass(frozen=True)
class Isolation:
    """What this platform lets the sandbox do, found once per process."""

    network: str | None  # "netns" (root) or "userns+netns"; None: the program has the network
    own_uid: bool  # the program runs as a uid of its own (grpo-cli runs as root)
    notes: tuple[str, ...] = field(default=())
    python: str = sys.executable  # what `python` in a command runs

    def warnings(self) -> list[str]:
        """One sentence for each thing the sandbox cannot stop here."""
        said = []
        if self.network is None:
            said.append(
                "the code sandbox cannot cut the network here (no network namespace: not root and unprivileged "
                "user namespaces are off), so programs under test can open connections"
            )
        if not self.own_uid:
            said.append(
                "the code sandbox runs programs as your own user (it drops to a uid of its own only when run "
                "as root), so a program can write and delete files you can and read /proc/<pid>/environ of your "
                "processes"
            )
        return said + list(self.notes)


_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
    elif _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _try_in_child(action) -> bool:
    """Whether `action()` succeeds in a forked child (so that nothing changes in this process)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@functools.cache
def isolation() -> Isolation:
    """Probe, once per process, for a network namespace and a uid of the sandbox's own."""
    root = os.geteuid() == 0
    if root and _try_in_child(lambda: _unshare(CLONE_NEWNET)):
        network = "netns"
    elif _try_in_child(lambda: _unshare(CLONE_NEWUSER | CLONE_NEWNET)):
        network = "userns+netns"
    else:
        network = None
    own_uid, notes = False, []
    if root:
        if _uid_free(UID_BASE) and _uid_mapped(_slot_uid(MAX_SLOTS - 1)):
            own_uid = True
        else:
            notes.append(f"uids from {UID_BASE} are in use or unmapped, so programs run as root's uid")
    python = sys.executable
    if own_uid:  # the interpreter must be one that uid can run (a venv under a private home is not)
        python = _python_for(Isolation(network, True))
        if python is None:
            notes.append(
                "programs run as root's uid: no Python interpreter here can be run by a uid of their own "
                f"({sys.executable} is not readable by others)"
            )
            own_uid, python = False, sys.executable
        elif python != sys.executable:
            notes.append(
                f"programs run with {python}, not {sys.executable}: that one is not readable by other users, "
                "so only the packages of the former are importable"
            )
    return Isolation(network, own_uid, tuple(notes), python)


def _python_for(probe: Isolation) -> str | None:
    """The first Python interpreter, this one then those on the sandbox's PATH, that runs under `probe`."""
    found = [shutil.which(name, path=SANDBOX_PATH) for name in ("python3", "python")]
    for python in dict.fromkeys([sys.executable, *filter(None, found)]):
        try:
            outcome = run_here([python, "-I", "-c", "print('ok')"], isolation_=replace(probe, python=python))
        except OSError:
            continue
        if outcome.stdout.strip() == "ok":
            return python
    return None


def _uid_free(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


def _uid_mapped(uid: int) -> bool:
    try:
        lines = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    ranges = [(int(lines[i]), int(lines[i + 2])) for i in range(0, len(lines) - 2, 3)]
    return any(start <= uid < start + length for start, length in ranges)


def _slot_uid(slot: int) -> int:
    # Two grpo-cli processes on one machine get different uids unless their pids agree modulo 2**14.
    return UID_BASE + ((os.getpid() & 0x3FFF) * MAX_SLOTS) + slot


_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
for _slot in range(MAX_SLOTS):
    _slots.put(_slot)


def run_here(
    argv: list[str],
    *,
    files: dict[str, str] | None = None,
    stdin: str = "",
    limits: Limits = Limits(),
    isolation_: Isolation | None = None,
) -> Outcome:
    """Run `argv` in a fresh directory holding `files` (name -> text), `stdin` on its standard input.

    `argv[0] == "python"` means `Isolation.python` (this interpreter where the sandbox can run it). Returns how it ended; never raises for what the program does.
    """
    iso = isolation_ if isolation_ is not None else isolation()
    slot = _slots.get()  # blocks past MAX_SLOTS concurrent runs
    try:
        return _run(argv, files or {}, stdin, limits, iso, slot)
    finally:
        _slots.put(slot)


def _run(argv, files, stdin, limits: Limits, iso: Isolation, slot: int) -> Outcome:
    uid = _slot_uid(slot) if iso.own_uid else None
    marker = secrets.token_hex(8)
    workdir = tempfile.mkdtemp(prefix="grpo-sandbox-")
    try:
        for name, text in files.items():
            Path(workdir, name).write_text(text)
        Path(workdir, ".stdin").write_text(stdin)
        if uid is not None:
            for path in [workdir, *(Path(workdir, n) for n in files)]:
                os.chown(path, uid, uid)
        env = {
            "PATH": SANDBOX_PATH,
            "LANG": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
            "PYTHONIOENCODING": "utf-8",
            _MARKER: marker,
        }
        command = [iso.python if argv[0] == "python" else argv[0], *argv[1:]]
        with open(Path(workdir, ".stdin"), "rb") as stdin_file:
            return _supervise(command, workdir, env, stdin_file, limits, iso, uid)
    finally:
        if uid is not None:
            _kill_uid(uid)
            _remove_owned(uid)
        else:
            _kill_marked(marker)
        shutil.rmtree(workdir, ignore_errors=True)


def _preexec(limits: Limits, network: str | None, uid: int | None):
    """What the child does between fork and exec: plain system calls only (it may hold no Python lock)."""
    cpu = int(limits.timeout) + 1
    memory = limits.memory_mb * 1024 * 1024
    fsize = limits.file_mb * 1024 * 1024
    setrlimit = resource.setrlimit
    as_flags = {"netns": CLONE_NEWNET, "userns+netns": CLONE_NEWUSER | CLONE_NEWNET}.get(network or "")

    def child() -> None:
        setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        setrlimit(resource.RLIMIT_AS, (memory, memory))
        setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        setrlimit(resource.RLIMIT_CORE, (0, 0))
        if network == "netns" and as_flags:  # as root, before giving root up
            _unshare(as_flags)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
        if network == "userns+netns" and as_flags:
            _unshare(as_flags)

    return child


def _supervise(command, workdir, env, stdin_file, limits: Limits, iso: Isolation, uid) -> Outcome:
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdin=stdin_file,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        preexec_fn=_preexec(limits, iso.network, uid),
    )
    chunks = {process.stdout: [], process.stderr: []}
    size, timed_out, over = 0, False, False
    with selectors.DefaultSelector() as selector:
        for pipe in chunks:
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ)
        deadline = started + limits.timeout
        while selector.get_map() and not over:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            # Once the program has exited, what is already in the pipes is read and nothing more is waited
            # for: a process it left behind may hold them open.
            exited = process.poll() is not None
            for key, _ in selector.select(0 if exited else min(left, 0.2)):
                data = key.fileobj.read(65536)
                if data == b"":
                    selector.unregister(key.fileobj)
                elif data:
                    chunks[key.fileobj].append(data)
                    size += len(data)
                    over = size > limits.output_bytes
            if exited and not any(selector.select(0)):
                break
    _kill_group(process.pid)
    try:
        returncode = process.wait(timeout=max(0.0, deadline - time.monotonic()) + 1)
    except subprocess.TimeoutExpired:  # a child outside the group keeps the pipes open; the group is dead
        timed_out = True
        process.kill()
        returncode = process.wait()
    for pipe in chunks:
        pipe.close()
    if returncode == -signal.SIGXCPU:  # the CPU-seconds limit
        timed_out = True
    cap = limits.output_bytes
    out, err = (
        b"".join(chunks[p])[:cap].decode("utf-8", "replace") for p in (process.stdout, process.stderr)
    )
    return Outcome(returncode, out, err, timed_out, over, time.monotonic() - started)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid`, at once (`kill(-1)` from a child running as that uid, which spares itself)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _remove_owned(uid: int) -> None:
    """Delete what `uid` left at the top of the world-writable temporary folders."""
    for folder in dict.fromkeys([tempfile.gettempdir(), *_WORLD_WRITABLE]):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _kill_marked(marker: str) -> None:
    """Kill the processes started with `marker` in their environment (those that left the process group)."""
    needle = f"{_MARKER}={marker}".encode()
    for _ in range(3):  # a process may fork while the first pass kills its parent
        found = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if needle in (proc / "environ").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
                    found = True
            except OSError:
                continue
        if not found:
            return
