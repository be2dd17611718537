"""SIGINT and SIGTERM during `train`: stop at the end of the current step with a checkpoint, not mid-write.

The first signal only sets a flag; `callbacks.RunGuard` sees it when the step ends, has the trainer save a
checkpoint at that step and then raises `Interrupted`, which the train command turns into one line with the exact
`--resume` command and exit code 130 (SIGINT) or 143 (SIGTERM). A second SIGINT stops at once. Before training
begins (loading), a signal stops at once too: there is nothing to save yet.

From the first instruction of the `grpo-cli` process (`take_signals`, before typer, torch or trl are imported),
SIGINT and SIGTERM raise `Interrupted`, a BaseException like KeyboardInterrupt: no `except Exception` in a
library (transformers' lazy imports wrapped it as "Failed to import trl ...: SIGINT") turns it into an error,
and the CLI ends with one line and 130 or 143 (SIGTERM used to kill the process before Python could say anything).
"""

from __future__ import annotations

import os
import signal
import sys

# FORWARDED_ENV: set for the processes `distributed.relaunch` starts (the grpo-cli process above them forwards
# signals, reports the exit code and holds the run lock); COMMAND_ENV: the command that was typed.
from grpo_cli.distributed import COMMAND_ENV, SIGNALS, holder_gone
from grpo_cli.output import say


class Interrupted(BaseException):
    """The run stopped where a signal asked it to (after saving a checkpoint, when training had begun)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint=None, reason: str | None = None):
        super().__init__(reason or signal.Signals(signum).name)
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.reason = reason  # a stop grpo-cli asked for itself (`stop_for`), not a signal

    @property
    def exit_code(self) -> int:
        return 1 if self.reason else 128 + self.signum


_requested: int = 0  # the first signal received, 0 for none
_reason: str | None = None  # why grpo-cli itself asked to stop (`stop_for`)
_armed = False  # training has begun: a signal waits for the end of the step
_held = 0  # > 0 while cleaning up after a signal: another one must not cut the cleanup short
_previous: dict = {}


def take_signals() -> None:
    """SIGINT and SIGTERM raise `Interrupted` from now on: the first thing the `grpo-cli` process does."""
    for signum in SIGNALS:
        signal.signal(signum, _raise)


def _raise(signum, _frame) -> None:
    if _held:
        return
    raise Interrupted(signum)


class held:
    """While cleaning up after a signal (removing what a stopped run wrote), further signals are ignored."""

    def __enter__(self):
        global _held
        _held += 1

    def __exit__(self, *_exc):
        global _held
        _held -= 1


def requested() -> int:
    return _requested


def _handle(signum, _frame) -> None:
    global _requested
    if holder_gone():
        # The launcher passes on the signal its own death sent it: the process holding the run lock is gone, so no
        # checkpoint (nor anything else) may be written any more.
        os._exit(128 + signum)
    if not _armed:
        _raise(signum, _frame)
        return
    if _requested:
        if signum == signal.SIGINT:
            say("second interrupt: stopping at once, without a checkpoint", every_process=True)
            os._exit(130)
        return
    _requested = signum
    say(
        f"\n{signal.Signals(signum).name}: finishing the current step and saving a checkpoint "
        "(Ctrl-C again to stop at once)"
    )


def install() -> None:
    """Take SIGINT and SIGTERM for the rest of this command (`restore` gives them back)."""
    global _requested, _armed, _reason
    _requested, _armed, _reason = 0, False, None
    for signum in SIGNALS:
        _previous[signum] = signal.signal(signum, _handle)


def arm() -> None:
    """Training has begun: from now on a signal stops at the end of a step, with a checkpoint."""
    global _armed
    _armed = True


def request(signum: int) -> None:
    """Another process of the run was signalled: stop here too (the processes must stop at the same step)."""
    global _requested
    _requested = _requested or signum


def stop_for(reason: str) -> None:
    """Stop at the end of this step with a checkpoint, as on SIGTERM, for `reason` (e.g. the reward-hacking
    alarm with eval.stop_when_diverging): the train command says why and exits with code 1."""
    global _reason
    _reason = _reason or reason
    request(signal.SIGTERM)


def reason() -> str | None:
    return _reason


def restore() -> None:
    global _armed
    _armed = False
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()


def resume_command(output_dir, *, in_pipeline: bool = False) -> str:
    """The command that continues this run: the one that was typed, with --resume instead of --overwrite; for a
    stage of a pipeline, the command as typed (a pipeline skips its finished stages and resumes this one)."""
    import shlex

    argv = shlex.split(os.environ[COMMAND_ENV]) if COMMAND_ENV in os.environ else ["grpo-cli", *sys.argv[1:]]
    argv = [a for a in argv if a not in ("--overwrite", "--resume")]
    if in_pipeline:
        return shlex.join(argv)
    if (
        "--output-dir" not in argv
        and "-o" not in argv
        and not any(a.startswith("--output-dir=") for a in argv)
    ):
        argv += ["--output-dir", str(output_dir)]
    return shlex.join([*argv, "--resume"])
