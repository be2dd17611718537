"""Helpers shared by the built-in rewards."""

# What TRL passes as one completion: plain text, or the generated chat messages.
Completion = str | list[dict[str, str]]


def completion_text(completion: Completion) -> str:
    """The text of one completion: the string itself, or the content of the last message of a chat completion."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""
