"""Exact values for the parts the quickstart recipe adds: the `digits` reward and `addition_task(max_sum=...)`."""

from grpo_cli.builtin_rewards.digits import digits_reward
from grpo_cli.tasks import addition_task


def test_digits_reward_pays_per_character_in_place():
    completions = ["12", "13", "1", "123", "21", "", " 7 ", "7=", [{"role": "assistant", "content": "7"}]]
    answers = ["12", "12", "12", "12", "12", "12", "7", "7", "7"]
    assert digits_reward(completions, answer=answers) == [1.0, 0.5, 0.5, 2 / 3, 0.0, 0.0, 1.0, 0.5, 1.0]


def test_digits_reward_uses_the_named_column_and_skips_missing_references():
    assert digits_reward(["5", "5"], answer_column="target", target=["5", ""]) == [1.0, None]


def test_addition_task_max_sum_keeps_only_one_digit_sums():
    rows = addition_task(size=100, seed=0, max_operand=9, max_sum=9)
    assert len(rows) == 55
    assert len({row["question"] for row in rows}) == 55
    for row in rows:
        a, b = row["question"].removesuffix("=").split("+")
        assert int(a) + int(b) == int(row["answer"]) <= 9


def test_addition_task_without_max_sum_is_unchanged():
    rows = addition_task(size=3, seed=0, max_operand=2)
    assert rows == [{"question": q, "answer": str(eval(q[:-1]))} for q in (r["question"] for r in rows)]
    assert len(addition_task(size=100, seed=0, max_operand=9)) == 100
