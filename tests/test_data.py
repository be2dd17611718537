"""Datasets: every local format, prompts from templates or messages, system prompts, held-out splits."""

from __future__ import annotations

import json

import pytest

from grpo_cli import data, output, prompting, tasks
from grpo_cli.errors import UserError
from grpo_cli.models import char_tokenizer
from grpo_cli.recipe import DatasetSection

ROWS = [
    {"question": "1+2=", "answer": "3"},
    {"question": "4+4=", "answer": "8"},
    {"question": "0+5=", "answer": "5"},
]


def write(tmp_path, fmt: str):
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "csv":
        path.write_text("question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_formats_load_with_columns(tmp_path, fmt):
    path = write(tmp_path, fmt)
    spec = DatasetSection(source=str(path), prompt="Q: {question}")
    assert data.read_local(path).columns == ["question", "answer"]
    train, held_out = data.load_splits(spec, seed=0)
    assert held_out is None
    prepared = prompting.prepare(train, spec, char_tokenizer("0123456789+=Q: "))
    assert prepared["prompt"] == ["Q: 1+2=", "Q: 4+4=", "Q: 0+5="]
    assert [str(a) for a in prepared["answer"]] == ["3", "8", "5"]  # other columns pass through


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(UserError, match="dataset file not found: .*nope.jsonl"):
        data.load_splits(DatasetSection(source=str(tmp_path / "nope.jsonl")), seed=0)
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(UserError, match="unsupported file type; use one of .jsonl, .json, .csv, .parquet"):
        data.load_splits(DatasetSection(source=str(tmp_path / "d.txt")), seed=0)


def test_template_with_a_missing_column(tmp_path):
    spec = DatasetSection(source=str(write(tmp_path, "jsonl")), prompt="{problem}")
    train, _ = data.load_splits(spec, seed=0)
    with pytest.raises(
        UserError, match="dataset.prompt uses column\\(s\\) problem .* columns: question, answer"
    ):
        prompting.prepare(train, spec, char_tokenizer("0123456789"))


def test_messages_column_drops_the_reference_answer_and_adds_system_prompt():
    spec = DatasetSection(source="x.jsonl", system_prompt="Be brief.")
    row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    assert prompting.build_prompt(spec, row, chat=True) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
    ]
    assert prompting.build_prompt(spec, row, chat=False) == "Be brief.\n\n2+2?"


def test_chat_follows_the_tokenizer_template_unless_the_recipe_says():
    plain = char_tokenizer("ab")
    chatty = char_tokenizer("ab")
    chatty.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert prompting.uses_chat(DatasetSection(source="x.jsonl"), plain) is False
    assert prompting.uses_chat(DatasetSection(source="x.jsonl"), chatty) is True
    assert prompting.uses_chat(DatasetSection(source="x.jsonl", chat_template=False), chatty) is False
    with pytest.raises(
        UserError, match="dataset.chat_template is true, but the tokenizer has no chat template"
    ):
        prompting.uses_chat(DatasetSection(source="x.jsonl", chat_template=True), plain)


CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}], "answer": "2"},
    {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"},
]
PLAIN_TEXT = (
    "warning: dataset: the `messages` column holds chat messages, but the tokenizer of {name} has no chat template, "
    "so each prompt becomes its messages' text joined by blank lines, without roles; use a chat model's tokenizer, "
    "or set dataset.chat_template: false to train on that text (which silences this)\n"
)


def test_chat_data_turned_into_text_is_said_once_when_prepared(monkeypatch, capsys):
    """Issue 14 item 4: a tokenizer without a chat template turns a `messages` column into plain text: train (and
    every command that prepares prompts) says so once, once the tokenizer is loaded."""
    from datasets import Dataset

    monkeypatch.setattr(output, "_warned", set())
    rows = Dataset.from_list(CHAT_ROWS)
    spec = DatasetSection(source="x.jsonl")
    prepared = prompting.prepare(rows, spec, char_tokenizer("0123456789+?"))
    prompting.prepare(rows, spec, char_tokenizer("0123456789+?"))  # the held-out rows, say: not said again
    assert prepared["prompt"] == ["1+1?", "2+2?"]  # plain text, as the warning says
    assert capsys.readouterr().err == PLAIN_TEXT.format(name="a model built from a config")

    # Nothing to say: the recipe chose plain text, a template writes the prompt, the tokenizer has a chat
    # template, the data is text, or another process (not the main one) prepares it.
    chatty = char_tokenizer("0123456789+?")
    chatty.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    monkeypatch.setattr(output, "_warned", set())
    prompting.prepare(
        rows, DatasetSection(source="x.jsonl", chat_template=False), char_tokenizer("0123456789+?")
    )
    prompting.prepare(
        rows, DatasetSection(source="x.jsonl", prompt="{answer}"), char_tokenizer("0123456789+?")
    )
    prompting.prepare(rows, spec, chatty)
    prompting.prepare(
        Dataset.from_list([{"prompt": "1+1?", "answer": "2"}]), spec, char_tokenizer("0123456789+?")
    )
    monkeypatch.setenv("RANK", "1")
    prompting.prepare(rows, spec, char_tokenizer("0123456789+?"))
    assert capsys.readouterr().err == ""


def test_validate_says_chat_data_would_become_text_when_it_can_know(cli, tiny_recipe, tmp_path):
    """Before loading anything: a model built from a config has no chat template; a local model directory's
    tokenizer files say whether it has one; a Hub id cannot be known (train says it, once loaded)."""
    source = tmp_path / "chat.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in CHAT_ROWS))
    dataset = {"source": str(source), "generate": None, "prompt": None, "eval_size": None}
    result = cli("validate", tiny_recipe({"dataset": dataset}))
    assert result.exit_code == 0, result.output
    assert result.stdout == "tiny.yaml: ok (grpo, 2 rewards)\n"
    assert result.stderr == PLAIN_TEXT.format(name="a model built from a config")
    result = cli("validate", tiny_recipe({"dataset": {**dataset, "chat_template": False}}))
    assert result.exit_code == 0 and result.stderr == ""

    local = tmp_path / "local-model"
    local.mkdir()
    (local / "tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
    as_local = {"model": {"from_config": None, "name_or_path": str(local)}, "dataset": dataset}
    result = cli("validate", tiny_recipe(as_local))
    assert result.exit_code == 0 and result.stderr == PLAIN_TEXT.format(name=local)
    (local / "chat_template.jinja").write_text("{{ messages }}")  # where transformers 5 saves it
    assert cli("validate", tiny_recipe(as_local)).stderr == ""
    (local / "chat_template.jinja").unlink()
    (local / "tokenizer_config.json").write_text(
        '{"chat_template": "{{ messages }}"}'
    )  # where older ones did
    assert cli("validate", tiny_recipe(as_local)).stderr == ""
    hub = {"model": {"from_config": None, "name_or_path": "acme/chat-model"}, "dataset": dataset}
    assert cli("validate", tiny_recipe(hub)).stderr == ""


def test_no_prompt_source_is_explained():
    with pytest.raises(UserError, match=r"dataset: no prompt; set dataset.prompt to a template"):
        prompting.build_prompt(DatasetSection(source="x.jsonl"), {"question": "q"}, chat=False)


def test_held_out_by_size_ratio_and_file(tmp_path):
    generate = {"task": "addition", "size": 100}
    train, held_out = data.load_splits(DatasetSection(generate=generate, eval_size=20), seed=0)
    assert (len(train), len(held_out)) == (80, 20)
    assert not set(train["question"]) & set(held_out["question"])  # held-out problems are unseen
    train, held_out = data.load_splits(DatasetSection(generate=generate, eval_ratio=0.1), seed=0)
    assert (len(train), len(held_out)) == (90, 10)
    path = write(tmp_path, "jsonl")
    train, held_out = data.load_splits(DatasetSection(source=str(path), eval_split=str(path)), seed=0)
    assert len(held_out) == 3
    with pytest.raises(UserError, match="leaves no training rows"):
        data.load_splits(DatasetSection(generate=generate, eval_size=100), seed=0)


def test_limit_takes_the_first_rows():
    train, _ = data.load_splits(DatasetSection(generate={"task": "addition", "size": 50}, limit=7), seed=0)
    assert len(train) == 7


def test_addition_task_is_distinct_deterministic_and_correct():
    rows = tasks.addition_task(size=1000, seed=3)
    assert len(rows) == 100 and len({r["question"] for r in rows}) == 100
    assert rows == tasks.addition_task(size=1000, seed=3)
    for row in rows:
        a, b = row["question"].rstrip("=").split("+")
        assert int(row["answer"]) == int(a) + int(b)


def test_unknown_task():
    with pytest.raises(UserError, match="dataset.generate.task: unknown task 'sums'; available: addition"):
        data.load_splits(DatasetSection(generate={"task": "sums"}), seed=0)


def test_generated_data_has_no_eval_split():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="a generated dataset has no splits"):
        DatasetSection(generate={"task": "addition"}, eval_split="test")


def test_jsonl_lines_must_be_objects(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("5\n")
    with pytest.raises(UserError, match="each line must be a JSON object of columns, not 5"):
        data.read_local(path)


def test_generate_options_are_checked_by_name_type_and_range():
    from grpo_cli.recipe import GenerateSection

    assert tasks.check_task(GenerateSection(task="addition", options={"max_operand": 99})) == []
    assert tasks.check_task(GenerateSection(task="addition", options={"max_operand": True})) == [
        "dataset.generate.options: max_operand must be a whole number, got True"
    ]
    assert tasks.check_task(
        GenerateSection(task="addition", options={"min_operand": 5, "max_operand": 2})
    ) == ["dataset.generate.options: max_operand (2) is below min_operand (5)"]
    assert tasks.task_prompts(GenerateSection(task="addition", size=1000, options={"max_sum": 9})) == 55
    assert tasks.task_prompts(GenerateSection(task="addition", size=10)) == 10


def test_held_out_parts_that_leave_no_training_rows():
    generate = {"task": "addition", "size": 10}
    assert data.held_out_problem(DatasetSection(generate=generate, eval_size=9), 10) is None
    assert data.held_out_problem(DatasetSection(generate=generate, eval_ratio=0.95), 10) == (
        "dataset.eval_ratio=0.95 leaves no training rows (dataset has 10 rows)"
    )
    with pytest.raises(
        UserError, match=r"^dataset.eval_ratio=0.95 leaves no training rows \(dataset has 10 rows\)$"
    ):
        data.load_splits(DatasetSection(generate=generate, eval_ratio=0.95), seed=0)


def test_template_problems_name_what_format_cannot_fill_by_column():
    assert prompting.template_problems("Q: {question} {{literal}}") == []
    assert prompting.template_problems("{x[0]}") == [
        "dataset.prompt: {x[0]} reads an attribute or item; name a column only (write {{ and }} for literal braces)"
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.json", b'{"rows": [{"q": 1}]}', None),
        ("d.json", b"[]", "no rows"),
        ("d.csv", b"q,a\n1,2\n", None),
        ("d.jsonl", b'{"q": 1}\n[2]\n', "d.jsonl:2: each line must be a JSON object of columns, not [2]"),
    ],
)
def test_read_local_edge_cases(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    if message is None:
        assert data.read_local(path).rows == 1
    else:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            data.read_local(path)


def test_a_split_name_for_a_local_file_is_refused_not_read_as_the_training_file(tmp_path):
    path = write(tmp_path, "jsonl")
    spec = DatasetSection(source=str(path), eval_split="test")
    message = (
        "dataset.eval_split: 'test' is a split name, but a local file has no splits; "
        "name a held-out file, or use eval_size or eval_ratio"
    )
    assert data.eval_split_problem(spec) == message
    with pytest.raises(UserError) as info:
        data.load_splits(spec, seed=0)
    assert str(info.value) == message


def test_train_parses_a_local_file_once(tmp_path, tiny_recipe, monkeypatch):
    # `validate` reads the file for its checks; the training rows are built from that parse, not read again.
    import datasets

    from grpo_cli.algorithms import grpo
    from grpo_cli.workflows import train

    path = tmp_path / "d.jsonl"
    rows = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe({"dataset": {"generate": None, "source": str(path)}})
    parses, loaded = [], []
    parse = data._parse
    monkeypatch.setattr(data, "_parse", lambda *a: parses.append(a) or parse(*a))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the file was loaded again"))

    class Loaded(Exception):
        pass

    def fake_train(recipe, out, resume_from=None):
        loaded.append(data.load_splits(recipe.dataset, recipe.seed))
        raise Loaded

    monkeypatch.setattr(grpo, "config", lambda *a, **k: None)
    monkeypatch.setattr(grpo, "train", fake_train)
    with pytest.raises(Loaded):
        train.train_recipe(str(recipe))
    assert len(parses) == 1
    [(train_rows, held_out)] = loaded
    assert len(train_rows) + len(held_out) == len(rows) and len(held_out) == 8
    assert sorted([*train_rows["question"], *held_out["question"]]) == sorted(r["question"] for r in rows)


def test_a_changed_file_is_parsed_again(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "1"}) + "\n")
    assert data.read_local(path).rows == 1
    path.write_text(json.dumps({"q": "1"}) + "\n" + json.dumps({"q": "2"}) + "\n")
    assert data.read_local(path).rows == 2


@pytest.mark.parametrize(
    "rows",
    [
        [{"q": "1", "n": 1}, {"q": "2", "n": 2.5, "extra": True}],  # a column only some rows have
        [
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "yo"}]},
        ],
        [
            {"q": "1", "meta": {"a": 1}},
            {"q": "2", "meta": {"b": "x"}},
        ],  # objects whose keys differ: JSON text
        [{"q": "1", "when": "2020-01-01"}, {"q": "2", "when": "2021-02-03"}],  # read as dates
        [{"q": 1}, {"q": "two"}],  # mixed types
    ],
)
def test_local_rows_load_as_datasets_json_loader_reads_them(tmp_path, rows):
    from datasets import load_dataset

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = load_dataset("json", data_files=str(path), split="train")
    train, _ = data.load_splits(DatasetSection(source=str(path)), seed=0)
    assert (train.features, train.to_list()) == (expected.features, expected.to_list())
