"""What the CLI says about itself: every command's help keeps its words, usage names its arguments as the README
does, one `--output-dir` across the commands that write, `--version`, and `recipes cp` into a directory."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from grpo_cli import __version__
from grpo_cli.cli import app
from grpo_cli.recipe_files import shipped_recipes
from tests.helpers import heavy_modules_after

# Each command with text its help must show word for word: the usage line, and help text with placeholders
# (`<recipe name>`, `<column>`) that a markdown renderer swallowed as HTML tags.
HELP = {
    "": ["Usage: grpo-cli [OPTIONS] COMMAND [ARGS]...", "--version"],
    "train": ["Usage: grpo-cli train [OPTIONS] RECIPE [KEY=VALUE]...", "-o, --output-dir"],
    "validate": ["Usage: grpo-cli validate [OPTIONS] RECIPE [KEY=VALUE]...", "(see `grpo-cli recipes ls`)"],
    "eval": [
        "Usage: grpo-cli eval [OPTIONS] RECIPE [KEY=VALUE]...",
        "-o, --output-dir DIR",
        "else runs/eval-<recipe name>.",
        "Eval-only rewards go in the recipe's `eval: {rewards: [...]}`.",
        "RECIPE may be a pipeline file (`stages:`, e.g. `grpo-cli eval pipeline`)",
    ],
    "report": ["Usage: grpo-cli report [OPTIONS] RUN_DIR...", "-o, --output-dir DIR"],
    "export": ["Usage: grpo-cli export [OPTIONS] RUN_DIR", "-o, --output-dir DIR"],
    "generate": [
        "Usage: grpo-cli generate [OPTIONS] MODEL_OR_RUN [KEY=VALUE]...",
        '({"prompt": ...}, {"messages": [...]}, or the columns',
        '(`prompt: "{question}"`)',
    ],
    "sweep": ["Usage: grpo-cli sweep [OPTIONS] RECIPE KEY=V1,V2...", "-o, --output-dir DIR", "--parallel N"],
    "recipes": ["Usage: grpo-cli recipes [OPTIONS] COMMAND [ARGS]..."],
    "recipes ls": ["Usage: grpo-cli recipes ls [OPTIONS]"],
    "recipes show": ["Usage: grpo-cli recipes show [OPTIONS] RECIPE"],
    "recipes cp": ["Usage: grpo-cli recipes cp [OPTIONS] NAME DEST", "a new one when DEST ends with /"],
    "rewards": ["Usage: grpo-cli rewards [OPTIONS] COMMAND [ARGS]..."],
    "rewards ls": ["Usage: grpo-cli rewards ls [OPTIONS]"],
    "tools": ["Usage: grpo-cli tools [OPTIONS] COMMAND [ARGS]..."],
    "tools ls": ["Usage: grpo-cli tools ls [OPTIONS]", "--show"],
    "rewards test": [
        "Usage: grpo-cli rewards test [OPTIONS]",
        "a .jsonl file of {completion, row, prompt, <column>: value} objects ({messages: [...]} for a transcript",
        '--prompt "What is 2 + 3?" --column answer=5',
    ],
}


def help_text(*command: str) -> str:
    # Wide enough that no line wraps: the expected texts are matched whole.
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=400, max_content_width=400)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "grpo-cli")
def test_help_keeps_every_word(command):
    text = help_text(*command.split())
    for expected in HELP[command]:
        assert expected in text


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "grpo-cli")
def test_arguments_read_as_the_readme_writes_them(command):
    # Typer's own rendering: `{RECIPE}` for a required argument and a Python type after its name
    # (`RECIPE <str>`, `RUN_DIR <list[Path]>`), which says nothing a user can act on.
    text = help_text(*command.split())
    assert re.search(r"\{[A-Z_=]+\}|<(str|int|path|Path|list\[\w+\])>", text) is None, text


def test_every_command_is_checked():
    def commands(group, prefix=()):
        for name, sub in group.commands.items():
            yield " ".join((*prefix, name))
            yield from commands(sub, (*prefix, name)) if hasattr(sub, "commands") else ()

    import typer

    assert {"", *commands(typer.main.get_command(app))} == set(HELP)


@pytest.mark.parametrize("command", ["eval", "report"])
def test_old_output_name_is_hidden(command):
    assert re.search(r"--output\b(?!-)", help_text(command)) is None


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    line = result.stdout.strip()
    assert re.fullmatch(
        rf"grpo-cli {re.escape(__version__)} \(trl 1\.12\.\S+, transformers \S+, torch \S+\)", line
    ), line


def test_version_imports_no_torch():
    code = "from grpo_cli.cli import app\ntry:\n    app(['--version'])\nexcept SystemExit:\n    pass"
    assert heavy_modules_after(code) == []


@pytest.fixture
def finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "time": float(s), "reward": s / 10, "kl": 0.01, "loss": 0.1} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_output_dir(cli, finished_run, tmp_path):
    result = cli("report", finished_run, "--output-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {tmp_path / 'r' / 'report.md'} and ")
    assert (tmp_path / "r" / "report.md").is_file()


def test_report_old_output_name_still_works_with_a_note(cli, finished_run, tmp_path):
    result = cli("report", finished_run, "--output", tmp_path / "old")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "old" / "report.md").is_file()
    assert result.stderr == "note: --output is now --output-dir (-o); the old name goes in the next release\n"


def test_both_output_names_is_an_error(cli, finished_run, tmp_path):
    result = cli("report", finished_run, "--output", tmp_path / "a", "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert result.stderr == "error: --output is the old name of --output-dir: give --output-dir alone\n"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_eval_output_dir(cli, tiny_recipe, tmp_path):
    result = cli("eval", tiny_recipe(), "--limit", "2", "--output-dir", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"wrote {tmp_path / 'e' / 'eval.json'} and {tmp_path / 'e' / 'eval_samples.jsonl'}"
    )
    assert len((tmp_path / "e" / "eval_samples.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("dest", ["new/", "new/deeper/", "existing"])
def test_recipes_cp_into_a_directory(cli, tmp_path, monkeypatch, dest):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    result = cli("recipes", "cp", "addition", dest)
    target = tmp_path / dest / "addition.yaml"
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {dest.rstrip('/')}/addition.yaml\n"
    expected = yaml.safe_load(shipped_recipes()["addition"].read_text())
    assert yaml.safe_load(target.read_text()).keys() == expected.keys()


def test_recipes_cp_to_a_new_name_is_a_file(cli, tmp_path):
    assert cli("recipes", "cp", "addition", tmp_path / "mine").exit_code == 0
    assert (tmp_path / "mine").is_file()


def test_one_reward_is_singular(cli, tiny_recipe):
    result = cli("validate", tiny_recipe({"rewards": [{"name": "accuracy"}]}))
    assert result.exit_code == 0, result.output
    assert result.stdout == "tiny.yaml: ok (grpo, 1 reward)\n"


def test_counted():
    from grpo_cli.commands._common import counted

    assert [counted(n, "reward") for n in (0, 1, 2)] == ["0 rewards", "1 reward", "2 rewards"]


def test_piped_recipes_ls_keeps_each_row_on_one_line(cli, monkeypatch):
    # CliRunner's stdout is not a terminal, as with `grpo-cli recipes ls | cat`.
    monkeypatch.delenv("COLUMNS", raising=False)
    result = cli("recipes", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(shipped_recipes()), result.stdout
    assert [line.split()[0] for line in lines[1:]] == list(shipped_recipes())
    (pipeline,) = [line for line in lines if line.split()[0] == "pipeline"]
    # The description is the first sentence whole, over the three comment lines it spans.
    assert pipeline.rstrip().endswith(
        "then improve the SFT model with PPO against that reward model and, separately, "
        "with GRPO and a LoRA adapter."
    ), pipeline


def test_piped_tables_respect_columns_given(monkeypatch):
    from grpo_cli.commands._common import stdout_console

    monkeypatch.setenv("COLUMNS", "60")
    assert stdout_console().width == 60
    monkeypatch.delenv("COLUMNS")
    assert stdout_console().width > 1000


@pytest.mark.parametrize(
    ("comments", "description"),
    [
        ("# grpo-cli train x\n# One line. Another sentence.\n# More.\n", "One line. Another sentence."),
        (
            "# grpo-cli train x\n# Starts here,\n# goes on (~2.5 min, e.g. this). Not this.\n",
            "Starts here, goes on (~2.5 min, e.g. this).",
        ),
        ("# Run: grpo-cli train x\n# No full stop\n#\n# Needs: a GPU.\n", "No full stop"),
        ("algorithm: grpo\n", ""),
    ],
)
def test_recipe_description_is_whole_sentences(tmp_path, comments, description):
    from grpo_cli.commands.recipes import _description

    path = tmp_path / "r.yaml"
    path.write_text(comments + "algorithm: grpo\n")
    assert _description(path) == description
