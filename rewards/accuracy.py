"""Exact-match accuracy of the final answer (GSM8K `####`, `\\boxed{}`, `<answer>` tags or the last number)."""

import re
from decimal import Decimal

from ._text import Completion, completion_text

__all__ = ["accuracy_reward"]

# A number as people write it: thousands separators and decimals optional, or a bare `.5`. A minus sign counts
# only when it does not follow a word or digit, so "5-3" ends in 3, not -3.
_NUMBER = r"(?:(?<![\w.])-)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def _boxed(text: str) -> tuple[str, int] | None:
    """The content of the last `\\boxed{...}` (braces inside may nest) and where `\\boxed` starts."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    depth = 0
    for end in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : end], start
    return None


def _last(pattern: re.Pattern, text: str) -> tuple[str, int] | None:
    """The last match of `pattern`: its first group (or the whole match) and where the match starts."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    return matches[-1].group(1 if pattern.groups else 0), matches[-1].start()


def find_answer(text: str, *, last_number: bool = True) -> tuple[str, int] | None:
    """The final answer written in `text` and the index where it, or its marker, starts; None if there is none.

    Tried in order, the last occurrence of each winning: `#### 42` (to the end of the line), `\\boxed{42}`,
    `<answer>42</answer>`, else (unless `last_number=False`) the last number in the text. `text[:start]` is
    everything written before the answer.

    >>> from grpo_cli.builtin_rewards.accuracy import find_answer
    >>> find_answer("3 + 4 = 7, so #### 7")
    ('7', 14)
    >>> find_answer("<answer> Paris </answer>"), find_answer("no answer here")
    (('Paris', 0), None)
    """
    for found in (_last(_GSM8K_RE, text), _boxed(text), _last(_ANSWER_TAG_RE, text)):
        if found is not None:
            return found[0].strip(), found[1]
    return _last(_NUMBER_RE, text) if last_number else None


def extract_answer(text: str) -> str | None:
    """The final answer written in `text`, as written (see `find_answer`), or None if there is none.

    >>> from grpo_cli.builtin_rewards.accuracy import extract_answer
    >>> extract_answer(r"so x = \\boxed{\\frac{1}{2}}"), extract_answer("It costs $1,250.")
    ('\\\\frac{1}{2}', '1,250')
    """
    found = find_answer(text)
    return None if found is None else found[0]


def normalize_answer(answer: str) -> str:
    """A canonical form for comparing answers: numbers as plain decimals, anything else lower-cased.

    A leading `$` and trailing `%` or `.` are dropped, thousands separators removed, and trailing zeros ignored.

    >>> from grpo_cli.builtin_rewards.accuracy import normalize_answer
    >>> [normalize_answer(a) for a in ["1,000", "1000.0", "$1000", ".5", "50%", "-3.", " New  York "]]
    ['1000', '1000', '1000', '0.5', '50', '-3', 'new york']
    """
    text = answer.strip().removeprefix("$").rstrip(".%").strip()
    if _NUMBER_RE.fullmatch(text):
        value = Decimal(text.replace(",", ""))
        return "0" if value == 0 else format(value.normalize(), "f")
    return " ".join(text.split()).lower()


def reference_answer(reference: object) -> str | None:
    """The normalised reference answer, or None when it is missing or empty.

    A reference that marks its answer (`#### 72` as in GSM8K, `\\boxed{}`, `<answer>`) contributes only that
    answer; any other reference is the answer as a whole, so "1/2" stays "1/2" rather than its last number.
    """
    if reference is None:
        return None
    text = str(reference)
    found = find_answer(text, last_number=False)
    return normalize_answer(text if found is None else found[0]) or None


def is_correct(text: str, reference: object) -> bool | None:
    """Whether the final answer in `text` equals the reference answer; None when there is no reference."""
    expected = reference_answer(reference)
    if expected is None:
        return None
    answer = extract_answer(text)
    return answer is not None and normalize_answer(answer) == expected


def accuracy_reward(
    completions: list[Completion], answer_column: str = "answer", **kwargs
) -> list[float | None]:
    """1.0 when the completion's final answer equals the reference answer, else 0.0.

    The final answer is found by `find_answer` and both sides are compared after `normalize_answer`, so "1,000",
    "1000" and "$1000.0" agree. A completion whose reference is missing or empty gets None (TRL skips it).

    >>> from grpo_cli.builtin_rewards.accuracy import accuracy_reward
    >>> completions = ["2 + 3 = 5", [{"role": "assistant", "content": "So \\\\boxed{6}"}], "It is 1,000."]
    >>> accuracy_reward(completions, answer=["5", "5", "10 * 100 = 1000\\n#### 1000"])
    [1.0, 0.0, 1.0]
    >>> accuracy_reward(["5"], answer=[""])
    [None]
    """
    results = []
    for completion, reference in zip(completions, kwargs[answer_column], strict=True):
        correct = is_correct(completion_text(completion), reference)
        results.append(None if correct is None else float(correct))
    return results
