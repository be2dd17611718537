"""The one exception type that means "the user can fix this": the CLI prints it as one line and exits 2."""


def describe(err: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


class UserError(Exception):
    """A mistake in the user's input (recipe, file, argument), with a message that says how to fix it.

    `problems` holds every problem found when several were collected at once (e.g. by `validate`).
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []
