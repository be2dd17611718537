"""`grpo-cli generate`: prompts from --prompt, a .txt or .jsonl file, or a chat on stdin (scripted here), prepared
and decoded as `eval` does, for a run, its base, an export or a model directory; `--recipe` scores the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grpo_cli import generation, model_sources, models, prompting
from grpo_cli.workflows import evaluate_generations as evaluate
from tests.helpers import eval_completions, run_recipe
from tests.tiny_runs import CHAT_TEMPLATE, bpe_model, fake_run


def generate(*args, stdin: str | None = None):
    from grpo_cli.cli import app

    return CliRunner().invoke(app, ["generate", *map(str, args)], input=stdin)


def ok(*args, stdin: str | None = None) -> str:
    result = generate(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def answers(stdout: str) -> dict[str, list[str]]:
    """`>>> prompt` lines and the completions under them."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith(">>> "):
            current = found.setdefault(line[4:], [])
        else:
            current.append(line)
    return found


def held_out_questions(run: Path) -> list[str]:
    return list(evaluate.held_out_rows(run_recipe(run), None)["question"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run for the module: no test writes into it."""
    return fake_run(tmp_path_factory.mktemp("generate"))


def test_prompts_complete_as_eval_does(run):
    questions = held_out_questions(run)
    expected, _ = eval_completions(run)
    args = [arg for q in questions for arg in ("--prompt", q)]
    got = answers(ok(run, *args))
    assert [got[q] for q in questions] == [[text] for text in expected]
    assert len(set(expected)) > 1


def test_prompt_files(run, tmp_path):
    questions = held_out_questions(run)
    expected, _ = eval_completions(run)
    (tmp_path / "prompts.txt").write_text("\n".join(questions) + "\n\n")
    rows = [{"question": q} if i % 2 else {"prompt": q} for i, q in enumerate(questions)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("prompts.txt", "prompts.jsonl"):
        got = answers(ok(run, "-f", tmp_path / name))
        assert [got[q] for q in questions] == [[text] for text in expected]


def test_base_export_and_model_dir_are_accepted(run, cli, tmp_path):
    question = held_out_questions(run)[0]
    tuned = answers(ok(run, "-p", question))[question]
    base = answers(ok(run, "--base", "-p", question))[question]
    # A bare model directory comes with no recipe: TRL's default length, unless told.
    assert answers(ok(run / "base_model", "-p", question, "--max-new-tokens", "2"))[question] == base
    assert base != tuned
    assert cli("export", run, "-o", tmp_path / "exported").exit_code == 0
    assert answers(ok(tmp_path / "exported", "-p", question))[question] == tuned
    assert answers(ok(tmp_path / "exported", "--base", "-p", question))[question] == base
    assert answers(ok(run / "checkpoint-2", "-p", question))[question] == tuned
    assert cli("export", run, "-o", tmp_path / "adapter", "--adapter-only").exit_code == 0
    assert answers(ok(tmp_path / "adapter", "-p", question))[question] == tuned
    # KEY=VALUE overrides change the run's own recipe: here its length limit.
    assert len(answers(ok(run, "trainer.max_completion_length=5", "-p", question))[question][0]) > 2


def test_sampling_is_seeded_and_greedy_by_default(run):
    question = held_out_questions(run)[0]
    first = answers(ok(run, "-p", question, "-k", "4", "--temperature", "2"))[question]
    assert len(first) == 4 and all(line.startswith(f"[{i + 1}] ") for i, line in enumerate(first))
    assert answers(ok(run, "-p", question, "-k", "4", "--temperature", "2"))[question] == first
    assert answers(ok(run, "-p", question, "-k", "4", "-t", "2", "--seed", "7"))[question] != first
    assert "greedy, up to 2 new tokens" in generate(run, "-p", question).stderr
    assert len(answers(ok(run, "-p", question, "--max-new-tokens", "6"))[question][0]) > 2


def test_recipe_scores_with_its_rewards(run):
    recipe = run_recipe(run)
    scored = evaluate.run(recipe, adapter=run, progress=False)  # what eval says of the same completions
    rows = scored.rows
    result = generate(run, "--recipe", run / "recipe.yaml", *[a for r in rows for a in ("-p", r["question"])])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "closeness" in result.stdout
    for row, (sample,) in zip(rows, scored.samples["tuned"], strict=True):
        (line,) = [line for line in result.stdout.splitlines() if repr(row["question"]) in line]
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        assert cells[1:] == [
            repr(sample.text),
            *(f"{sample.scores[n]:g}" for n in ("accuracy", "closeness")),
            f"{sample.total:g}",
        ]

    result = generate(run, "--recipe", run / "recipe.yaml", "-p", "9+9+9=")
    assert result.exit_code == 2
    assert "is not in the recipe's dataset, and its rewards read column(s) answer" in result.stderr


def test_scripted_chat_keeps_history_until_reset(tmp_path):
    run = fake_run(tmp_path, chat_template=CHAT_TEMPLATE)
    recipe = run_recipe(run)
    stdout = ok(run, stdin="1+2=\n3+4=\n/reset\n3+4=\n")
    lines = stdout.splitlines()
    assert [line for line in lines if line.startswith("> ")] == ["> 1+2=", "> 3+4=", "> /reset", "> 3+4="]
    turns = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("> ") and line != "> /reset"]
    assert len(turns) == 3
    # The second turn saw the first in its prompt; after /reset the same question is asked afresh.
    assert turns[2] == answers(ok(run, "-p", "3+4="))["3+4="][0]
    tuned, _ = model_sources.resolve_models(recipe, adapter=run, model=None)
    model, tokenizer = models.load_source(tuned, recipe)
    history = [
        {"role": "user", "content": "1+2="},
        {"role": "assistant", "content": turns[0]},
        {"role": "user", "content": "3+4="},
    ]
    ids = prompting.tokenize_prompts(tokenizer, [history])
    (sample,) = generation.generate(model, tokenizer, ids, generation.sampling_settings(recipe, 1), 1)[0]
    assert turns[1] == sample.text


def test_scripted_chat_without_a_chat_template(run):
    question = held_out_questions(run)[0]
    result = generate(run, stdin=f"{question}\n{question}\n")
    assert result.exit_code == 0, result.output
    assert "no chat template" in result.stderr
    single = answers(ok(run, "-p", question))[question][0]
    assert result.stdout.splitlines() == [f"> {question}", single, f"> {question}", single]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere", "-p", "1"], "cannot load"),
        (["empty", "-p", "1"], "holds no model"),
        (["run/base_model", "--base", "-p", "1"], "has no base to try"),
        (["run", "-f", "missing.txt"], "-f missing.txt: cannot read it"),
        (["run", "-f", "bad.jsonl"], "-f bad.jsonl:2: invalid JSON"),
        (["run", "-f", "keys.jsonl"], "prompt 1 has none of the keys prompt, messages, question"),
        (["run", "-k", "2", "-t", "0", "-p", "1"], "give a --temperature above 0"),
        (["run/base_model", "trainer.top_k=3", "-p", "1"], "has none: give one with --recipe"),
        (["run", "trainer.top_kk=3", "-p", "1"], "did you mean 'top_k'"),
    ],
)
def test_user_errors(tmp_path, monkeypatch, args, message):
    fake_run(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1"}\n{oops\n')
    (tmp_path / "keys.jsonl").write_text('{"answer": "1"}\n')
    monkeypatch.chdir(tmp_path)
    result = generate(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_typed_prompt_matches_a_chat_row_with_its_own_system_turn(cli, tmp_path):
    """Rows of a chat dataset carry a system turn the recipe does not: a typed question is found by its user turn,
    and is generated from the row's prompt, system turn and all (as a .jsonl file with the whole row is)."""
    from tests import realistic_model

    model = bpe_model(tmp_path / "model")
    rows = realistic_model.chat_rows(12, 10)
    realistic_model.write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(
        "algorithm: grpo\nmodel: {name_or_path: model}\ndataset: {source: train.jsonl, eval_size: 4}\n"
        "rewards: [{name: accuracy}]\ntrainer: {max_completion_length: 3}\n"
    )
    row = rows[7]
    question = row["messages"][1]["content"]
    typed = cli("generate", model, "--recipe", recipe, "-p", question)
    assert typed.exit_code == 0, typed.output
    whole = tmp_path / "row.jsonl"
    realistic_model.write_jsonl(whole, [{"messages": row["messages"][:2], "answer": row["answer"]}])
    from_file = cli("generate", model, "--recipe", recipe, "-f", whole)
    assert from_file.exit_code == 0, from_file.output
    assert question[:20] in typed.stdout and typed.stdout == from_file.stdout
    unknown = cli("generate", model, "--recipe", recipe, "-p", question + " Twice?")
    assert unknown.exit_code == 2 and "is not in the recipe's dataset" in unknown.stderr


@pytest.mark.parametrize("name", ["runs/nosuch", "./nosuch", "runs/deep/nosuch", "run/recipe.yaml"])
def test_a_missing_local_path_is_a_local_error_with_no_hub_call(tmp_path, monkeypatch, name):
    """`runs/nosuch` beside `runs/` is a mistyped run, not a Hub id: one line, exit 2, before anything loads."""
    from grpo_cli.workflows import generate as generating

    fake_run(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded (the Hub tried)")

    monkeypatch.setattr(generating, "load_target", no_load)
    monkeypatch.setattr(generating, "load_source", no_load)
    result = generate(name, "--prompt", "hi")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    if name.endswith(".yaml"):
        assert (
            line
            == f"error: {name} is a file; give a training run, an exported directory, a saved model or adapter"
        )
    else:
        assert line.startswith(f"error: {name}: no such directory ({tmp_path / name}")
