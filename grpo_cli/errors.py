"""What a user's mistake looks like: `UserError` (the CLI prints it as one line and exits 2), `ConfigError` (a
list of problems found at once, formatted in one place), and the one "did you mean" hint every message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def describe(err: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def shorten(value: object, limit: int = 200) -> str:
    """A value's repr, cut to `limit` characters: what a message or table shows of a prompt, completion or object."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> str:
    """` (did you mean 'x'?)`, or with n > 1 ` (did you mean 'x' or 'y'?)`, for the (at most n) choices close to
    `word`; '' when none is. Long lists of similar names (TRL's fields, recipe keys) take n=1; short ones
    (reward names and arguments) show up to 3."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


MAX_SHOWN = 20  # problems listed; past that a list stops being read (100k unknown keys printed 100k lines)


def format_problems(source: str, problems: list[str]) -> str:
    """`source: problem` for one problem; `source: N problems:` and one `  - problem` line each for several, the
    first MAX_SHOWN of them and `  ... and M more`."""
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    lines = [f"  - {p}" for p in problems[:MAX_SHOWN]]
    if len(problems) > MAX_SHOWN:
        lines.append(f"  ... and {len(problems) - MAX_SHOWN} more (fix these and validate again)")
    return f"{source}: {len(problems)} problems:\n" + "\n".join(lines)


class UserError(Exception):
    """A mistake in the user's input (recipe, file, argument), with a message that says how to fix it.

    `problems` holds every problem found when several were collected at once (e.g. by `validate`).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class ConfigError(UserError):
    """Every problem found in one input (a recipe, a file), formatted by `format_problems`."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(format_problems(source, problems), list(problems))
        self.source = source


class Stop(Exception):
    """The command ends here with `exit_code`, having said why already: a run stopped by a signal (130, 143, after
    saving), or the exit code of the processes a launcher started. The CLI exits with it, printing nothing more."""

    def __init__(self, exit_code: int):
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
