"""`output.phase`: one line per step of a command's start on stderr, with its time; main process only."""

from __future__ import annotations

import io
import re

import pytest

from grpo_cli.output import phase, say


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_whole_line_when_the_step_ends(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with phase("loading model acme/m"):
        assert stream.getvalue() == ""  # not a terminal: nothing half-written that other output could split
    with phase("preparing 60 prompts"):
        pass
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"loading model acme/m \.\.\. \d+\.\d s", lines[0])
    assert re.fullmatch(r"preparing 60 prompts \.\.\. \d+\.\d s", lines[1])


def test_a_terminal_sees_the_step_while_it_runs(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    with phase("loading model acme/m"):
        assert stream.getvalue() == "loading model acme/m ..."
    assert re.fullmatch(r"loading model acme/m \.\.\. \d+\.\d s\n", stream.getvalue())


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_a_failing_step_leaves_the_line_to_its_error(monkeypatch, stream):
    monkeypatch.setattr("sys.stderr", stream)
    with pytest.raises(ValueError), phase("loading model acme/m"):
        raise ValueError("no")
    assert stream.getvalue() in ("", "loading model acme/m ...\n")  # no time: it did not finish


def test_only_the_main_process_speaks(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setenv("RANK", "1")
    with phase("loading model acme/m"):
        pass
    assert stream.getvalue() == ""


def test_a_line_said_during_a_step_does_not_split_it(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    with phase("preparing 48 prompts"):
        say("warning: dataset: ...")
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["preparing 48 prompts ...", "warning: dataset: ..."]
    assert re.fullmatch(r"preparing 48 prompts \.\.\. \d+\.\d s", lines[2]) and len(lines) == 3
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with phase("preparing 48 prompts"):
        say("warning: dataset: ...")
    assert stream.getvalue().splitlines()[0] == "warning: dataset: ..."
