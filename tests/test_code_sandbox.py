"""Hostile programs under the `code` reward's sandbox: each scores 0 with its verdict, and neither this process
nor the machine keeps a trace (no process, no file, no connection, no secret read)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from grpo_cli import code_runner, sandbox, sandbox_server

ISOLATION = sandbox.isolation()
needs_own_uid = pytest.mark.skipif(
    not ISOLATION.own_uid,
    reason="run by a normal user the sandboxed program runs as that user (see docs/rewards.md): it can write and "
    "delete the user's files and read /proc/<pid>/environ of the user's processes",
)
needs_netns = pytest.mark.skipif(
    ISOLATION.network is None,
    reason="no network namespace on this platform (not root, unprivileged user namespaces off)",
)


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{textwrap.dedent(code).strip()}\n```\n"


def check(code: str, tests: str = "assert True", **options) -> code_runner.CodeResult:
    return code_runner.check(fenced(code), tests, code_runner.Options(**options))


def sandbox_processes() -> list[int]:
    """Processes a sandboxed program started that are still alive: those of a sandbox uid, or carrying the
    sandbox's environment marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            uid = proc.stat().st_uid
            marked = b"GRPO_SANDBOX_RUN=" in (proc / "environ").read_bytes()
        except OSError:
            continue
        if uid >= sandbox.UID_BASE or marked:
            found.append(int(proc.name))
    return found


@pytest.fixture(autouse=True)
def machine_unaffected():
    """After each case: no process of the sandbox alive, this process's directory and environment unchanged."""

    def environment():
        return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}

    cwd, env = os.getcwd(), environment()
    yield
    time.sleep(0.05)
    assert sandbox_processes() == []
    assert os.getcwd() == cwd
    assert environment() == env


def test_infinite_loop_times_out():
    started = time.monotonic()
    result = check("while True:\n    pass", timeout=1)
    assert (result.score, result.verdict) == (0.0, "timeout")
    assert time.monotonic() - started < 5


def test_sleeping_forever_is_killed_at_the_wall_clock_timeout():
    started = time.monotonic()
    result = check("import time\ntime.sleep(3600)", timeout=1)
    assert (result.score, result.verdict) == (0.0, "timeout")
    assert time.monotonic() - started < 5


def test_memory_bomb_hits_the_address_space_limit():
    result = check("hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))", memory_mb=128)
    assert (result.score, result.verdict) == (0.0, "memory")


def test_fork_bomb_leaves_no_process():
    code = """
    import os
    while True:
        try:
            os.fork()
        except OSError:
            pass
    """
    started = time.monotonic()
    result = check(code, timeout=2)
    assert result.score == 0.0
    assert result.verdict in ("timeout", "crash")
    assert time.monotonic() - started < 10
    # machine_unaffected then checks that no process of it is left


def test_ten_gigabyte_write_is_stopped_and_leaves_no_file():
    big = Path(tempfile.gettempdir(), f"grpo-hostile-{os.getpid()}.bin")
    code = f"""
    import os
    block = b"x" * 2**20
    with open("big.bin", "wb") as here, open({str(big)!r}, "wb") as there:
        for _ in range(10 * 1024):
            here.write(block)
            there.write(block)
    """
    try:
        result = check(code, timeout=10)
        assert (result.score, result.verdict) == (0.0, "crash")
        assert "File too large" in result.details
        if ISOLATION.own_uid:  # as root: its own uid, whose files outside its directory are deleted after it
            assert not big.exists()
        else:  # as a normal user it writes where the user can (docs/rewards.md): bounded by RLIMIT_FSIZE only
            assert big.stat().st_size <= sandbox.Limits().file_mb * 2**20
        assert not list(Path(tempfile.gettempdir()).glob("grpo-sandbox-*/big.bin"))
    finally:
        big.unlink(missing_ok=True)


@needs_own_uid
def test_writing_and_deleting_outside_its_directory_fails():
    victim_dir = Path(tempfile.mkdtemp(prefix="grpo-victim-"))
    try:
        victim_dir.chmod(0o755)  # as a user's folders usually are: readable by others
        victim = victim_dir / "keep.txt"
        victim.write_text("precious")
        victim.chmod(0o644)
        code = f"""
        import os, shutil
        for attempt in (
            lambda: os.remove({str(victim)!r}),
            lambda: open({str(victim)!r}, "w").write("overwritten"),
            lambda: open({str(victim_dir / "new.txt")!r}, "w").write("planted"),
            lambda: shutil.rmtree({str(victim_dir)!r}),
            lambda: os.chmod({str(victim)!r}, 0o777),
        ):
            try:
                attempt()
            except OSError:
                pass
        """
        result = check(code, tests="assert not os.path.exists(" + repr(str(victim)) + ")")
        assert (result.score, result.verdict) == (0.0, "failed")
        assert victim.read_text() == "precious"
        assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"]
        assert victim.stat().st_mode & 0o777 == 0o644
    finally:
        for path in victim_dir.iterdir():
            path.unlink()
        victim_dir.rmdir()


def test_a_secret_in_the_environment_is_not_visible():
    os.environ["SECRET"] = "hunter2"  # not monkeypatch: it is undone only after machine_unaffected compares
    try:
        result = check("import os\nleak = os.environ.get('SECRET')", tests="assert leak == 'hunter2'")
    finally:
        del os.environ["SECRET"]
    assert (result.score, result.verdict) == (0.0, "failed")


@needs_own_uid
def test_a_secret_in_another_process_environment_is_not_readable():
    # A secret this process was started with sits in /proc/<pid>/environ for its whole life: start one so.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, "SECRET": "hunter2"}
    )
    try:
        code = f"""
        leak = b""
        for pid in ({holder.pid}, {os.getpid()}):
            try:
                leak += open(f"/proc/{{pid}}/environ", "rb").read()
            except OSError:
                pass
        """
        result = check(code, tests="assert b'hunter2' in leak")
        assert (result.score, result.verdict) == (0.0, "failed")
    finally:
        holder.kill()
        holder.wait()


@needs_netns
def test_no_connection_to_a_server_on_localhost():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = f"""
    import socket
    connection = socket.create_connection(("127.0.0.1", {port}), timeout=2)
    connection.sendall(b"stolen")
    """
    result = check(code)
    server.settimeout(0.2)  # a connection that got through waits in the listen backlog
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()
    assert (result.score, result.verdict) == (0.0, "crash")
    assert "OSError" in result.details or "unreachable" in result.details


def test_a_process_meant_to_outlive_the_run_is_killed():
    code = """
    import subprocess, sys
    for detached in (True, False):
        subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            start_new_session=detached, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    raise SystemExit(0)
    """
    started = time.monotonic()
    result = check(code, timeout=3)
    assert (result.score, result.verdict) == (0.0, "crash")
    assert time.monotonic() - started < 3  # not waiting for the sleepers' pipes
    # machine_unaffected then checks that both sleepers are gone


def test_printing_gigabytes_is_cut_off_fast():
    started = time.monotonic()
    result = check("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout=30)
    assert (result.score, result.verdict) == (0.0, "crash")
    assert "more output" in result.details
    assert time.monotonic() - started < 5


def test_the_sandbox_directory_is_fresh_and_removed():
    code = "import os\nleft = os.listdir('.')\nopen('mine.txt', 'w').write('x')\nhere = os.getcwd()"
    outcome = sandbox_server.run(
        ["python", "-I", "-c", f"{code}\nprint(here, sorted(left))"],
        files={"a.py": ""},
        limits=sandbox.Limits(),
    )
    here, left = outcome.stdout.split(" ", 1)
    assert left.strip() == "['.stdin', 'a.py']"
    assert not Path(here).exists()
