"""The one channel for what grpo-cli says on stderr: the step it is in (`phase`), lines (`say`), warnings (`warn_once`).

Every module below `commands/` speaks through here, never through print, typer or its own stream handling.
Only the main process speaks (the others do the same work at the same time); results a command prints on
stdout (tables, "done" lines) are the command's.

`phase` says what a command is doing before its progress bar appears, one line per step, with how long it took:

    loading model Qwen/Qwen2.5-0.5B-Instruct ... 3.1 s
    preparing 60 prompts ... 0.4 s

Between `train` and the first progress line pass seconds of imports, model and data loading and trainer setup:
without these lines they are silent. In a terminal the step's name shows while it runs and its time is added
when it ends; elsewhere (a log file, a test) each line is written whole when its step ends, so lines from other
sources never split one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from grpo_cli.distributed import is_main_process

_open: list[str] = []  # the step whose line waits, in a terminal, for its time to be added


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """Say `what` is happening and, once it is done, how long it took; a step that fails says nothing more
    (its error is the next line)."""
    if not is_main_process():
        yield
        return
    stream = sys.stderr  # looked up now: CliRunner and redirections replace it
    live = stream.isatty()
    if live:
        stream.write(f"{what} ...")
        stream.flush()
        _open[:] = [what]
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        if _open:
            stream.write("\n")
        _open.clear()
        raise
    seconds = f"{time.perf_counter() - started:.1f} s"
    # Whole, unless its line is still open (a `say` in between closed it).
    stream.write(f" {seconds}\n" if _open == [what] else f"{what} ... {seconds}\n")
    stream.flush()
    _open.clear()


def say(line: str, *, every_process: bool = False) -> None:
    """A line on stderr that does not split the line of a step in progress; from the main process only, unless
    `every_process` (a line about this process alone)."""
    if not every_process and not is_main_process():
        return
    stream = sys.stderr  # looked up now: CliRunner and redirections replace it
    if _open:
        stream.write("\n")
        _open.clear()
    stream.write(line + "\n")
    stream.flush()


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """`warning: message`, once per process (the same data is prepared for training and held-out rows alike)."""
    if message not in _warned:
        _warned.add(message)
        say(f"warning: {message}")
