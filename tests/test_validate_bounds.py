"""Inputs that once gave validate a traceback or minutes of work: each is now one line (or a capped list) and
exit 2, found before anything heavy runs."""

from __future__ import annotations

import pytest

from grpo_cli.errors import MAX_SHOWN
from grpo_cli.recipe_files import MAX_BYTES, MAX_VALUES

LONG = "a" * 300  # one path part over the 255 bytes a file system allows


def refused(result) -> str:
    """The one error line of a refused command (no traceback)."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result.stderr.strip()


@pytest.mark.parametrize("override", ["x[0]=1", "rewards[0].weight=2", "model.from_config.x[1]=2"])
def test_an_override_key_with_brackets_is_an_unknown_key(cli, override):
    message = refused(cli("validate", "addition", override))
    key = override.split("=")[0]
    assert f"{key.split('.')[0] if key.startswith('rewards') else key}: unknown key" in message
    assert "cannot index into a list" in message


@pytest.mark.parametrize("key", ["model.name_or_path", "dataset.source", "output_dir", "model.run"])
def test_a_name_no_file_system_can_hold_is_refused_by_the_schema(cli, key):
    message = refused(cli("validate", "addition", f"{key}={LONG}"))
    assert f"{key}: has a part longer than 255 bytes" in message


def test_a_recipe_name_too_long_for_a_file(cli):
    assert refused(cli("validate", LONG)).endswith("File name too long")


def test_a_reward_name_and_a_parent_too_long_for_a_file(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        f"dataset: {{generate: {{task: addition}}}}\nrewards: [{{name: {LONG}}}]\n"
    )
    assert "rewards[0].name: has a part longer than 255 bytes" in refused(cli("validate", recipe))
    recipe.write_text(f"extends: {LONG}\n")
    assert "does not exist" in refused(cli("validate", recipe))


def test_a_number_of_thousands_of_digits_in_a_data_file(cli, tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"question": "1+1=", "answer": ' + "9" * 5000 + "}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        "dataset: {source: rows.jsonl, prompt: '{question}'}\nrewards: [{name: accuracy}]\n"
    )
    assert "rows.jsonl:1: invalid JSON: Exceeds the limit (4300 digits)" in refused(cli("validate", recipe))


def test_an_alias_bomb_is_refused_before_it_expands(cli, tmp_path):
    """9 levels of 9 aliases: 969 bytes that expand to ~4e8 values (it burned CPU for minutes before)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join([*lines, "extra: *a8", ""]))
    message = refused(cli("validate", recipe))
    assert "values once its aliases (*name) are expanded" in message
    assert f"at most {MAX_VALUES:,}" in message


def test_a_few_aliases_are_fine(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: &m {vocabulary: '0123456789+='}}\n"
        "dataset: {generate: {task: addition}, prompt: '{question}'}\nrewards: [&r {name: accuracy}]\n"
        "eval: {rewards: [{name: closeness}]}\n"
    )
    assert cli("validate", recipe).exit_code == 0


def test_a_recipe_over_the_size_limit(cli, tmp_path):
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("# a comment\n" * (MAX_BYTES // 12 + 10))
    assert "over 1 MiB; a recipe is a few KiB of YAML" in refused(cli("validate", recipe))


def test_nesting_past_the_limit(cli, tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("a: " + "[" * 100 + "]" * 100 + "\n")
    assert "nested more than 64 levels deep" in refused(cli("validate", recipe))


def test_a_long_problem_list_is_cut(cli, tmp_path):
    recipe = tmp_path / "many.yaml"
    keys = "".join(f"  unknown_{i}: 1\n" for i in range(500))
    recipe.write_text(
        f"model:\n  from_config: {{vocabulary: '0123456789+='}}\n{keys}"
        "dataset: {generate: {task: addition}, prompt: '{question}'}\nrewards: [{name: accuracy}]\n"
    )
    result = cli("validate", recipe)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and lines[0].endswith("500 problems:")
    assert len(lines) == 1 + MAX_SHOWN + 1
    assert lines[-1] == f"  ... and {500 - MAX_SHOWN} more (fix these and validate again)"


def test_a_pipeline_too_long_or_listing_a_stage_twice(cli, tmp_path):
    (tmp_path / "s.yaml").write_text("algorithm: sft\n")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages: [" + ", ".join(["s.yaml"] * 1000) + "]\n")
    assert refused(cli("validate", pipeline)).endswith("1000 stages; a pipeline has at most 50")
    pipeline.write_text("stages: [s.yaml, s.yaml]\n")
    assert refused(cli("validate", pipeline)).endswith("stage 's.yaml' is listed twice; list each stage once")


def _reward_file_recipe(tmp_path, body: str):
    (tmp_path / "plugin.py").write_text(
        f"{body}\ndef r(completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        "dataset: {generate: {task: addition}, prompt: '{question}'}\nrewards: [{name: ./plugin.py:r}]\n"
    )
    return recipe


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit(3)", "raise SystemExit('bye')"])
def test_a_plugin_that_exits_while_imported_is_one_line(cli, tmp_path, call):
    recipe = _reward_file_recipe(tmp_path, f"import sys\n{call}")
    assert "called sys.exit(" in refused(cli("validate", recipe))
    assert "while being imported; a plugin file must only define things" in refused(cli("validate", recipe))


@pytest.mark.parametrize("call", ["import os\nos._exit(0)", "from os import _exit\n_exit(3)"])
def test_a_plugin_that_ends_the_process_while_imported_is_one_line(tmp_path, call):
    """os._exit at import ended validate with exit 0 and no output (issue 23 item 3): driven as a real process."""
    import subprocess
    import sys

    recipe = _reward_file_recipe(tmp_path, call)
    done = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "validate", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "called os._exit(" in done.stderr and "while being imported" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_plugin_that_hangs_while_imported_is_stopped(cli, tmp_path, monkeypatch):
    from grpo_cli import user_code

    monkeypatch.setattr(user_code, "IMPORT_TIMEOUT_S", 0.5)
    recipe = _reward_file_recipe(tmp_path, "while True:\n    pass")
    assert "was still running its import after 0.5 s" in refused(cli("validate", recipe))
