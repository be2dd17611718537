"""The built-in rewards: exact values, their docstring examples, pickling and naming conventions."""

import doctest
import importlib
import pickle
from functools import partial

import pytest

from grpo_cli._paths import REWARDS_DIR
from grpo_cli.builtin_rewards.accuracy import accuracy_reward, extract_answer, normalize_answer
from grpo_cli.builtin_rewards.format import format_reward
from grpo_cli.builtin_rewards.length import length_reward
from grpo_cli.builtin_rewards.reasoned_accuracy import reasoned_accuracy_reward
from grpo_cli.builtin_rewards.repetition import repetition_reward

MODULE_NAMES = sorted(path.stem for path in REWARDS_DIR.glob("*.py") if not path.name.startswith("_"))


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_every_reward_file_is_found():
    assert set(MODULE_NAMES) >= {"accuracy", "format", "length", "repetition", "reasoned_accuracy"}


# --- conventions every module follows -------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_docstring_examples_pass(name):
    module = importlib.import_module(f"grpo_cli.builtin_rewards.{name}")
    results = doctest.testmod(module)
    assert results.attempted > 0, f"{name} has no docstring example"
    assert results.failed == 0


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_module_lists_documented_rewards(name):
    module = importlib.import_module(f"grpo_cli.builtin_rewards.{name}")
    assert module.__doc__.strip().splitlines()[0]
    assert module.__all__
    for attribute in module.__all__:
        reward = getattr(module, attribute)
        assert reward.__name__ == attribute
        assert attribute.endswith("_reward")
        assert reward.__doc__.strip().splitlines()[0]


BOUND_REWARDS = [
    (accuracy_reward, {}, {"answer": ["5"]}),
    (format_reward, {"pattern": r"\d+"}, {}),
    (length_reward, {"target": 4}, {}),
    (repetition_reward, {"ngram_size": 1}, {}),
    (reasoned_accuracy_reward, {"answer_column": "solution"}, {"solution": ["5"]}),
]


@pytest.mark.parametrize(("reward", "args", "columns"), BOUND_REWARDS)
def test_bound_rewards_survive_pickling(reward, args, columns):
    bound = partial(reward, **args)
    restored = pickle.loads(pickle.dumps(bound))
    assert restored.func is reward
    assert restored(["2 + 3 = 5"], **columns) == bound(["2 + 3 = 5"], **columns)


@pytest.mark.parametrize(("reward", "args", "columns"), BOUND_REWARDS)
def test_rewards_accept_everything_trl_passes(reward, args, columns):
    trl_kwargs = {
        "prompts": ["What is 2 + 3?"],
        "completion_ids": [[17, 489, 220]],
        "trainer_state": None,
        "log_extra": lambda column, values: None,
        "log_metric": lambda name, value: None,
    }
    rewards = reward(["2 + 3 = 5"], **args, **columns, **trl_kwargs)
    assert len(rewards) == 1
    assert isinstance(rewards[0], float)


# --- accuracy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("blah\n#### 42\n", "42"),
        ("#### 7\nthen \\boxed{8}", "7"),  # `####` comes first in the extraction order
        (r"first \boxed{1} then \boxed{\frac{2}{3}}", r"\frac{2}{3}"),
        ("<answer> 9 </answer> but 10", "9"),
        ("<answer>1</answer> <answer>2</answer>", "2"),
        ("3 apples and 4 pears make 7 fruits.", "7"),
        ("so 5-3", "3"),
        ("x = -3", "-3"),
        ("it is .5 now", ".5"),
        ("nothing numeric", None),
        ("", None),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("1,000", "1000"),
        ("1000.0", "1000"),
        ("$1,000.00", "1000"),
        (".5", "0.5"),
        ("50%", "50"),
        ("7.", "7"),
        ("-0.0", "0"),
        ("-3", "-3.000"),
    ],
)
def test_normalize_answer_equal(left, right):
    assert normalize_answer(left) == normalize_answer(right)


@pytest.mark.parametrize(("left", "right"), [("-3", "3"), ("10", "100"), ("1,0", "10"), ("0.5", "5")])
def test_normalize_answer_different(left, right):
    assert normalize_answer(left) != normalize_answer(right)


def test_accuracy_values():
    completions = [
        "The total is 1,000.",
        chat("<think>half of 1</think><answer>.5</answer>"),
        "I think it's Paris",
        "#### 71",
        "no number at all",
        "\\boxed{PARIS}",
    ]
    answer = ["1000", "0.5", "Paris", "Janet ... 8 * 9 = 72\n#### 72", "4", " paris "]
    assert accuracy_reward(completions, answer=answer) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_accuracy_reference_without_marker_is_compared_whole():
    assert accuracy_reward([r"\boxed{1/2}", "it is 2"], answer=["1/2", "1/2"]) == [1.0, 0.0]


def test_accuracy_skips_missing_references():
    assert accuracy_reward(["5", "5", "5", "5"], answer=[None, "", "  ", 5]) == [None, None, None, 1.0]


def test_accuracy_reads_the_named_column():
    assert accuracy_reward(["5"], answer_column="target", target=["5"], answer=["6"]) == [1.0]


def test_accuracy_needs_one_reference_per_completion():
    with pytest.raises(ValueError):
        accuracy_reward(["5", "6"], answer=["5"])


# --- reasoned accuracy ----------------------------------------------------------------------------------


def test_reasoned_accuracy_worked_example():
    assert reasoned_accuracy_reward(["5", "6", "2 + 3 = 5"], answer=["5", "5", "5"]) == [1.0, 0.0, 2.0]


def test_reasoned_accuracy_values():
    completions = [
        chat("The answer is 5"),  # a lead-in is not reasoning
        chat("<think>She had two apples and bought three more.</think>\n<answer>5</answer>"),
        "2 + 3 = 6",  # reasoning does not rescue a wrong answer
        "Four words then \\boxed{5}",
        "Four words then \\boxed{5}",
    ]
    answer = ["5", "5", "5", "5", None]
    assert reasoned_accuracy_reward(completions, answer=answer) == [1.0, 2.0, 0.0, 1.0, None]
    assert reasoned_accuracy_reward(completions[3:4], answer=["5"], min_words=3) == [2.0]


# --- format ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reward"),
    [
        ("<think>r</think><answer>a</answer>", 1.0),
        ("  <think>\nline\nline\n</think>\n\n<answer>\n42\n</answer>\n ", 1.0),
        ("<answer>42</answer>", 0.0),
        ("<think>r</think>", 0.0),
        ("<answer>a</answer><think>r</think>", 0.0),
        ("intro <think>r</think><answer>a</answer>", 0.0),
        ("<think>r</think><answer>a</answer> trailing", 0.0),
        ("<think>r</think><answer>a</answer><answer>b</answer>", 0.0),
        ("<think>r<think>r</think><answer>a</answer>", 0.0),
    ],
)
def test_format_default(text, reward):
    assert format_reward([text, chat(text)]) == [reward, reward]


def test_format_custom_pattern_must_match_whole_completion():
    pattern = r"Reasoning:.+\nAnswer: \d+"
    completions = ["Reasoning: a\nb\nAnswer: 12", "Answer: 12", "Reasoning: a\nAnswer: 12 extra"]
    assert format_reward(completions, pattern=pattern) == [1.0, 0.0, 0.0]


def test_format_rejects_invalid_pattern():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        format_reward([], pattern="(unclosed")


# --- length ---------------------------------------------------------------------------------------------


def test_length_target():
    completions = ["x" * 100, "x" * 75, "x" * 150, "", "x" * 300, chat("x" * 125)]
    assert length_reward(completions, target=100) == [1.0, 0.75, 0.5, 0.0, 0.0, 0.75]


def test_length_max_length_soft_penalty():
    completions = ["", "x" * 80, "x" * 90, "x" * 95, "x" * 100, "x" * 1000, chat("x" * 85)]
    assert length_reward(completions, max_length=100) == [0.0, 0.0, -0.5, -0.75, -1.0, -1.0, -0.25]
    assert length_reward(["x" * 75], max_length=100, soft_fraction=0.5) == [-0.5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "exactly one of"),
        ({"target": 10, "max_length": 20}, "exactly one of"),
        ({"target": 0}, "target"),
        ({"max_length": -5}, "max_length"),
        ({"max_length": 10, "soft_fraction": 1.0}, "soft_fraction"),
    ],
)
def test_length_rejects_bad_arguments_before_scoring(args, message):
    with pytest.raises(ValueError, match=message):
        length_reward([], **args)


# --- repetition -----------------------------------------------------------------------------------------


def test_repetition_values():
    completions = [
        "one two three four",  # no repeated trigram
        "a b c a b c",  # trigrams: abc bca cab abc -> 3 unique of 4
        chat("Go go GO go go"),  # case-insensitive: 3 identical trigrams -> 1 unique of 3
        "too short",
        "",
    ]
    assert repetition_reward(completions) == [0.0, -0.25, pytest.approx(-2 / 3), 0.0, 0.0]
    assert repetition_reward(["a b c a b c"], max_penalty=-0.5) == [-0.125]
    assert repetition_reward(["a a a b"], ngram_size=1) == [-0.5]


@pytest.mark.parametrize("args", [{"ngram_size": 0}, {"max_penalty": 0.5}])
def test_repetition_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        repetition_reward([], **args)
