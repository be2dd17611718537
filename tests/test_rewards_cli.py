"""`grpo-cli rewards ls` and `grpo-cli rewards test`: exact tables, advantages as GRPO computes them, errors."""

from __future__ import annotations

import json
import textwrap

import pytest

from grpo_cli import reward_binding

WORKED_EXAMPLE = ["-r", "reasoned_accuracy", "--prompt", "What is 2 + 3?", "--column", "answer=5"]


def tables(output: str) -> list[dict]:
    """The tables `rewards test` prints: each one's title, header and rows of cells."""
    found, previous = [], ""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│" if "│" in line else "┃")[1:-1]]
        if line.startswith("┏"):
            title = previous.rstrip() if previous.startswith("prompt: ") else None
            found.append({"title": title, "header": [], "rows": []})
        elif line.startswith("┃"):
            found[-1]["header"] = cells
        elif line.startswith("│"):
            found[-1]["rows"].append(cells)
        previous = line
    return found


def test_worked_example(cli):
    result = cli("rewards", "test", *WORKED_EXAMPLE, "-c", "5", "-c", "6", "-c", "2 + 3 = 5")
    assert result.exit_code == 0, result.output
    assert tables(result.stdout) == [
        {
            "title": "prompt: 'What is 2 + 3?'",
            "header": ["completion", "reasoned_accuracy", "total", "advantage (/std)"],
            "rows": [
                ["'5'", "1", "1", "+0.000"],
                ["'6'", "0", "0", "-1.000"],
                ["'2 + 3 = 5'", "2", "2", "+1.000"],
            ],
        }
    ]


def test_no_scale_leaves_out_the_division_by_the_std(cli):
    group = ["-c", "6", "-c", "2 + 3 = 5"]  # totals 0 and 2: std sqrt(2)
    scaled = tables(cli("rewards", "test", *WORKED_EXAMPLE, *group).stdout)[0]
    assert [row[-1] for row in scaled["rows"]] == ["-0.707", "+0.707"]
    unscaled = tables(cli("rewards", "test", *WORKED_EXAMPLE, *group, "--no-scale").stdout)[0]
    assert unscaled["header"][-1] == "advantage"
    assert [row[-1] for row in unscaled["rows"]] == ["-1.000", "+1.000"]


def test_completions_file_with_column_values_and_a_none_score(cli, tmp_path):
    lines = [
        {"completion": "so 5"},
        {"completion": "5", "answer": ""},  # no reference: accuracy gives None, so no reward applies
        {"completion": "4"},
    ]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli("rewards", "test", "-r", "accuracy", "--column", "answer=5", "-f", path, "-c", "five")
    (table,) = tables(result.stdout)
    assert table["title"] is None  # no --prompt
    # Totals 0, 1, None, 0: the None is left out of the mean (1/3) and the std, and gets no advantage.
    std = (((1 - 1 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2) ** 0.5
    assert table["rows"] == [
        ["'five'", "0", "0", f"{(0 - 1 / 3) / (std + 1e-4):+.3f}"],
        ["'so 5'", "1", "1", f"{(1 - 1 / 3) / (std + 1e-4):+.3f}"],
        ["'5'", "None", "None", "+0.000"],
        ["'4'", "0", "0", f"{(0 - 1 / 3) / (std + 1e-4):+.3f}"],
    ]


@pytest.fixture
def recipe(tiny_recipe, tmp_path):
    """A recipe over a two-row dataset, with a weighted second reward; `changes` deep-merge into it."""
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "What is 10 - 4?", "answer": "6"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def make(changes: dict | None = None):
        base = {
            "dataset": {"generate": None, "source": "d.jsonl", "eval_size": None, "prompt": "Q: {question}"},
            "rewards": [{"name": "accuracy"}, {"name": "closeness", "weight": 0.5}],
        }
        from grpo_cli.recipe_files import deep_merge

        return tiny_recipe(deep_merge(base, changes or {}))

    return make


def test_recipe_with_a_jsonl_completions_file_scores_against_each_row(cli, recipe, tmp_path):
    path = tmp_path / "completions.jsonl"
    items = [{"row": 0, "completion": "5"}, {"row": 1, "completion": "8"}, {"row": 0, "completion": "7"}]
    items += [{"row": 1, "completion": "6"}, {"row": 1, "completion": "It is 6."}]
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    result = cli("rewards", "test", "--recipe", recipe(), "-f", path)
    assert result.exit_code == 0, result.output
    first, second = tables(result.stdout)
    assert first["title"] == "prompt: 'Q: What is 2 + 3?' (row 0)"
    assert first["header"] == ["completion", "accuracy", "closeness x0.5", "total", "advantage (/std)"]
    # totals 1.5 and 0.4 (closeness 1 - 2/10 = 0.8, halved): +-0.707 after dividing by the std
    assert first["rows"] == [["'5'", "1", "1", "1.5", "+0.707"], ["'7'", "0", "0.8", "0.4", "-0.707"]]
    assert second["title"] == "prompt: 'Q: What is 10 - 4?' (row 1)"
    # totals 0.4, 1.5, 1.5: mean 34/30, std 0.635
    assert second["rows"] == [
        ["'8'", "0", "0.8", "0.4", "-1.155"],
        ["'6'", "1", "1", "1.5", "+0.577"],
        ["'It is 6.'", "1", "1", "1.5", "+0.577"],
    ]


def test_recipe_with_plain_completions_row_option_and_its_scale_setting(cli, recipe, tmp_path):
    path = tmp_path / "completions.txt"
    path.write_text("6\n\n{not json, just text}\n")
    result = cli(
        "rewards",
        "test",
        "--recipe",
        recipe({"trainer": {"scale_rewards": "none"}}),
        "-f",
        path,
        "--row",
        "1",
    )
    (table,) = tables(result.stdout)
    assert table["title"] == "prompt: 'Q: What is 10 - 4?' (row 1)"
    assert table["header"][-1] == "advantage"
    assert table["rows"] == [
        ["'6'", "1", "1", "1.5", "+0.750"],
        ["'{not json, just text}'", "0", "0", "0", "-0.750"],
    ]
    rescaled = tables(
        cli("rewards", "test", "--recipe", recipe(), "-f", path, "--row", "1", "--no-scale").stdout
    )
    assert [row[-1] for row in rescaled[0]["rows"]] == ["+0.750", "-0.750"]


def test_recipe_with_batch_scaling_divides_by_the_std_of_every_group(cli, recipe, tmp_path):
    path = tmp_path / "completions.jsonl"
    items = [{"row": 0, "completion": "5"}, {"row": 0, "completion": "7"}, {"row": 1, "completion": "6"}]
    items.append({"row": 1, "completion": "6"})
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    result = cli("rewards", "test", "--recipe", recipe({"trainer": {"scale_rewards": "batch"}}), "-f", path)
    first, second = tables(result.stdout)
    assert first["header"][-1] == "advantage (/batch std)"
    std = ((3 * (1.5 - 1.225) ** 2 + (0.4 - 1.225) ** 2) / 3) ** 0.5  # over 1.5, 0.4, 1.5, 1.5
    assert [row[-1] for row in first["rows"]] == [
        f"{0.55 / (std + 1e-4):+.3f}",
        f"{-0.55 / (std + 1e-4):+.3f}",
    ]
    assert [row[-1] for row in second["rows"]] == ["+0.000", "+0.000"]


def test_recipe_with_other_rewards_and_column_values(cli, recipe, tmp_path):
    result = cli(
        "rewards",
        "test",
        "--recipe",
        recipe(),
        "-r",
        "length",
        "--arg",
        "target=4",
        "-c",
        "abcd",
        "-c",
        "ab",
        "--prompt",
        "anything",
    )
    (table,) = tables(result.stdout)
    assert table["title"] == "prompt: 'anything' (row 0)"
    assert table["header"][:2] == ["completion", "length"]
    assert [row[1] for row in table["rows"]] == ["1", "0.5"]
    replaced = tables(cli("rewards", "test", "--recipe", recipe(), "-c", "7", "--column", "answer=7").stdout)
    assert replaced[0]["rows"] == [["'7'", "1", "1", "1.5", "+0.000"]]


def test_a_file_plugin_with_a_weight_from_a_recipe(cli, recipe, tmp_path):
    (tmp_path / "mine.py").write_text(
        textwrap.dedent(
            """
            def brevity(completions, limit=10):
                return [1.0 if len(c) <= limit else 0.0 for c in completions]
            """
        )
    )
    path = recipe({"rewards": [{"name": "./mine.py:brevity", "weight": 2.0, "args": {"limit": 1}}]})
    result = cli("rewards", "test", "--recipe", path, "-c", "5", "-c", "55")
    (table,) = tables(result.stdout)
    assert table["header"] == ["completion", "brevity x2", "total", "advantage (/std)"]
    assert table["rows"] == [["'5'", "1", "2", "+0.707"], ["'55'", "0", "0", "-0.707"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no completions: give --completion TEXT (repeatable) or --completions-file FILE"),
        (["-c", "5"], "name the rewards with --reward NAME (see `grpo-cli rewards ls`), or give --recipe"),
        (
            ["-r", "accuracy", "-r", "format", "--arg", "x=1", "-c", "5"],
            "--arg applies to a single --reward; use a recipe to give several rewards arguments",
        ),
        (["-r", "accuracy", "--column", "answer", "-c", "5"], "bad --column 'answer': write NAME=VALUE"),
        (
            ["-r", "accuracy", "--column", "answer=[5", "-c", "5"],
            "--column answer: invalid JSON: Expecting ',' delimiter",
        ),
        (
            ["-r", "accuracy", "--row", "2", "-c", "5"],
            "a row number needs --recipe: the row of its dataset the completions answer",
        ),
        (
            ["-r", "acuracy", "-c", "5"],
            "rewards[0]: unknown reward 'acuracy' (did you mean 'accuracy' or 'reasoned_accuracy'?)",
        ),
        (
            ["-r", "length", "--arg", "tagret=3", "-c", "5"],
            "rewards[0] (length): unknown argument 'tagret' (did you mean 'target'?); its arguments: target=None, max_length=None, soft_fraction=0.8",
        ),
        (
            # Scored now, as in training (issue 14): a model that cannot be loaded (offline) is the error.
            ["-r", "model:acme/rm", "-c", "5"],
            "cannot load tokenizer 'acme/rm'",
        ),
        (
            ["-r", "accuracy", "-c", "5"],
            "rewards[0] (accuracy) reads column 'answer', give its value with --column answer=VALUE",
        ),
    ],
)
def test_errors_without_a_recipe(cli, args, message):
    result = cli("rewards", "test", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "completions file not found: {path}"),
        ("", "{path} holds no completions"),
        ('{"completion": "5"}\n{"completion": 5\n', "{path}:2: invalid JSON: Expecting ',' delimiter"),
        (
            '{"text": "5"}\n',
            '{path}:1: each line must be an object with a "completion" key, or "messages" (a transcript)',
        ),
        ('{"completion": "5", "row": "1"}\n', "{path}:1: \"row\" must be a dataset row number, got '1'"),
        ('{"completion": "5", "row": 2}\n', "row 2: the dataset's rows are 0..1"),
    ],
)
def test_completions_file_errors(cli, recipe, tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    if content is not None:
        path.write_text(content)
    result = cli("rewards", "test", "--recipe", recipe(), "-f", path)
    assert result.exit_code == 2
    assert result.stderr == f"error: {message.format(path=path)}\n"


def test_a_reward_that_fails_shows_the_offending_completion(cli, tmp_path):
    (tmp_path / "picky.py").write_text(
        "def picky(completions, **kw):\n    return [1.0 if c != 'x' else 'bad' for c in completions]\n"
    )
    result = cli(
        "rewards", "test", "-r", f"{tmp_path}/picky.py:picky", "--prompt", "Say y", "-c", "y", "-c", "x"
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: reward 'picky' returned a non-number 'bad'",
        "  prompt: 'Say y'",
        "  completion: 'x'",
        "  (set on_error: zero or skip on this reward to score such cases 0 or None and go on)",
    ]


# ---- rewards ls ----


def test_ls_lists_every_builtin_with_origin_arguments_columns_and_description(cli):
    result = cli("rewards", "ls")
    assert result.exit_code == 0
    for name in reward_binding.REWARDS.builtins():
        assert f"\n{name}  built-in\n" in f"\n{result.stdout}"
    assert (
        "reasoned_accuracy  built-in\n"
        "    2.0 for a correct answer with reasoning shown before it, 1.0 for a bare correct answer, 0.0 if wrong.\n"
        "    args: answer_column='answer', min_words=5\n"
        "    reads columns: answer\n"
    ) in result.stdout
    assert (
        "length  built-in\n" in result.stdout
        and "    args: target=None, max_length=None, soft_fraction=0.8\n" in result.stdout
    )
    assert result.stdout.endswith(
        "\nalso: path/to/file.py:function (relative to the recipe), package.module:function, "
        "or model:<Hub id or dir> for a reward model.\n"
    )


# ---- what rewards see: the same prompts and completions as in training ----

SHAPES = '''
def shape(prompts, completions, answer, **kwargs):
    """Written as the README says for chat data: the last message's content."""
    scores = []
    for prompt, completion, expected in zip(prompts, completions, answer):
        assert prompt[-1] == {"role": "user", "content": "Q: What is 2 + 3?"}, prompt
        assert completion == [{"role": "assistant", "content": completion[-1]["content"]}], completion
        scores.append(float(completion[-1]["content"] == expected) + 10 * (prompt[0]["role"] == "system"))
    return scores


def text(prompts, completions, **kwargs):
    return [float(isinstance(p, str) and isinstance(c, str)) for p, c in zip(prompts, completions)]
'''


@pytest.fixture
def chat_policy(tmp_path):
    """A policy directory whose tokenizer has a chat template, as real chat models have (only the tokenizer is
    read by `rewards test`)."""
    from grpo_cli.models import char_tokenizer

    tokenizer = char_tokenizer("0123456789+=")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(tmp_path / "policy")
    return tmp_path / "policy"


def test_chat_recipe_passes_message_lists_as_train_and_eval_do(cli, recipe, tmp_path, chat_policy):
    (tmp_path / "shapes.py").write_text(SHAPES)
    path = recipe(
        {
            "model": {"from_config": None, "name_or_path": str(chat_policy)},
            "rewards": [{"name": "./shapes.py:shape"}],
        }
    )
    result = cli("rewards", "test", "--recipe", path, "-c", "5", "-c", "6")
    assert result.exit_code == 0, result.output
    (table,) = tables(result.stdout)
    title = " ".join(line.strip() for line in result.stdout.split("┏")[0].splitlines())  # wrapped: too wide
    assert title == "prompt: [{'role': 'user', 'content': 'Q: What is 2 + 3?'}] (row 0)"
    assert [row[:3] for row in table["rows"]] == [["'5'", "1", "1"], ["'6'", "0", "0"]]
    # --prompt text is built into a prompt as data.py builds a row's, the recipe's system prompt first.
    with_system = recipe(
        {
            "model": {"from_config": None, "name_or_path": str(chat_policy)},
            "dataset": {"system_prompt": "Be brief."},
            "rewards": [{"name": "./shapes.py:shape"}],
        },
    )
    result = cli("rewards", "test", "--recipe", with_system, "--prompt", "Q: What is 2 + 3?", "-c", "5")
    assert result.exit_code == 0, result.output
    assert tables(result.stdout)[0]["rows"][0][:2] == ["'5'", "11"]


def test_text_recipe_passes_strings(cli, recipe, tmp_path):
    (tmp_path / "shapes.py").write_text(SHAPES)
    result = cli(
        "rewards", "test", "--recipe", recipe({"rewards": [{"name": "./shapes.py:text"}]}), "-c", "5"
    )
    assert tables(result.stdout)[0]["rows"] == [["'5'", "1", "1", "+0.000"]]


def test_row_counts_rows_of_the_file_not_the_shuffled_training_split(cli, recipe, tmp_path):
    rows = [{"question": f"What is {n} + 0?", "answer": str(n)} for n in range(10)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # eval_ratio shuffles before splitting: the training split's row 7 is some other row of the file.
    path = recipe({"dataset": {"eval_ratio": 0.3}})
    result = cli("rewards", "test", "--recipe", path, "--row", "7", "-c", "7")
    (table,) = tables(result.stdout)
    assert table["title"] == "prompt: 'Q: What is 7 + 0?' (row 7)"
    assert table["rows"] == [["'7'", "1", "1", "1.5", "+0.000"]]
    result = cli("rewards", "test", "--recipe", path, "--row", "10", "-c", "7")
    assert result.stderr == "error: row 10: the dataset's rows are 0..9\n"
