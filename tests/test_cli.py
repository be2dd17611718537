"""The command line: help, speed (no torch/trl import), validate, recipes, and how errors look."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from grpo_cli.recipe_files import shipped_recipes
from tests.helpers import heavy_modules_after

COMMANDS = [
    [],
    ["train"],
    ["validate"],
    ["eval"],
    ["report"],
    ["export"],
    ["generate"],
    ["recipes"],
    ["recipes", "ls"],
    ["recipes", "show"],
    ["recipes", "cp"],
    ["rewards"],
    ["rewards", "ls"],
    ["rewards", "test"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "grpo-cli")
def test_help_of_every_command(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: grpo-cli" in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "grpo-cli")
def test_help_imports_no_torch_or_trl(command):
    code = (
        "from grpo_cli.cli import app\n"
        f"try:\n    app({[*command, '--help']!r}, prog_name='grpo-cli')\nexcept SystemExit:\n    pass"
    )
    assert heavy_modules_after(code) == []


def test_validate_imports_no_torch_or_trl():
    code = (
        "from grpo_cli.cli import app\n"
        "try:\n    app(['validate', 'quickstart'], prog_name='grpo-cli')\nexcept SystemExit:\n    pass"
    )
    assert heavy_modules_after(code) == []


def test_validate_ok(cli, tiny_recipe):
    result = cli("validate", tiny_recipe())
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "tiny.yaml: ok (grpo, 2 rewards)"


def test_validate_reports_every_problem_with_exit_2(cli, tiny_recipe, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"q": "1+1=", "solution": "2"}\n')
    path = tiny_recipe(
        {
            # eval_size: None, or holding out 8 of its 1 row would be a fifth problem
            "dataset": {"generate": None, "source": "d.jsonl", "prompt": "{question}", "eval_size": None},
            "rewards": [{"name": "accuracy"}, {"name": "acuracy"}],
            "trainer": {"num_generations": 3},
        }
    )
    result = cli("validate", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: tiny.yaml: 4 problems:"
    assert lines[1].startswith(
        "  - trainer: processes (1) x per_device_train_batch_size (8) x gradient_accumulation_steps (1) = 8 "
        "completions per generation, which is not divisible by num_generations (3); "
        "set num_generations to one of [2, 4, 8]"
    )
    assert lines[2].startswith("  - rewards[1]: unknown reward 'acuracy' (did you mean 'accuracy'")
    assert (
        lines[3]
        == "  - dataset.prompt uses column 'question', which the dataset does not have; columns: q, solution"
    )
    assert lines[4].startswith(
        "  - rewards[0] (accuracy) reads column 'answer', which the dataset does not have"
    )


def test_validate_batch_rule_follows_steps_per_generation(cli, tiny_recipe):
    path = tiny_recipe({"trainer": {"num_generations": 16, "steps_per_generation": 2}})
    assert cli("validate", path).exit_code == 0  # 1 x 8 x 2 = 16 completions per generation
    result = cli("validate", path, "trainer.steps_per_generation=3")
    assert "per_device_train_batch_size (8) x steps_per_generation (3) = 24 completions" in result.stderr
    result = cli("validate", path, "trainer.generation_batch_size=24", "trainer.steps_per_generation=null")
    assert "trainer: generation_batch_size (24) completions per generation" in result.stderr
    result = cli("validate", path, "trainer.generation_batch_size=24")  # TRL refuses both at once
    assert (
        result.stderr
        == "error: tiny.yaml: trainer: give generation_batch_size or steps_per_generation, not both\n"
    )


def test_validate_batch_rule_counts_processes(cli, tiny_recipe):
    path = tiny_recipe({"trainer": {"num_generations": 8, "per_device_train_batch_size": 4}})
    assert cli("validate", path).exit_code == 2
    assert cli("validate", path, "--num-processes", "2").exit_code == 0


def test_validate_with_overrides(cli, tiny_recipe):
    result = cli("validate", tiny_recipe(), "lora.rr=3")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: tiny.yaml: lora.rr: unknown key (did you mean 'r'?)"


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(cli, name):
    result = cli("validate", name)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_starts_with_its_command(name):
    first = shipped_recipes()[name].read_text().splitlines()[0]
    assert first == f"# grpo-cli train {name}"


def test_errors_are_one_line_with_exit_2_and_traceback_only_in_debug(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "validate", missing], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == f"error: recipe file not found: {missing}\n"
    debug = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "validate", missing],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "GRPO_CLI_DEBUG": "1"},
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_recipes_ls_show_cp(cli, tmp_path):
    listing = cli("recipes", "ls")
    assert listing.exit_code == 0 and "quickstart" in listing.stdout
    shown = cli("recipes", "show", "addition")
    assert shown.stdout == shipped_recipes()["addition"].read_text()
    copied = cli("recipes", "cp", "addition", tmp_path / "my.yaml")
    assert copied.exit_code == 0
    assert yaml.safe_load((tmp_path / "my.yaml").read_text()) == yaml.safe_load(shown.stdout)
    again = cli("recipes", "cp", "addition", tmp_path / "my.yaml")
    assert again.exit_code == 2 and "exists; pass --force to replace it" in again.stderr
    assert cli("validate", tmp_path / "my.yaml").exit_code == 0


def test_a_copied_pipeline_brings_its_stages(cli, tmp_path):
    """`recipes cp quickstart qs/` copies the stage files beside the pipeline, so an edit of a copied stage is
    what the copy runs (stages named in site-packages could not be edited)."""
    copied = cli("recipes", "cp", "quickstart", f"{tmp_path / 'qs'}/")
    assert copied.exit_code == 0, copied.output
    assert copied.stdout == f"wrote {tmp_path / 'qs' / 'quickstart.yaml'} and its 2 stages\n"
    shipped = shipped_recipes()["quickstart"]
    pipeline = tmp_path / "qs" / "quickstart.yaml"
    assert pipeline.read_text() == shipped.read_text()  # relative stage paths, comments kept
    for stage in ("sft", "grpo"):
        copy = tmp_path / "qs" / "pipeline" / f"{stage}.yaml"
        assert copy.read_text() == (shipped.parent / "pipeline" / f"{stage}.yaml").read_text()
    assert cli("validate", pipeline).exit_code == 0
    sft = tmp_path / "qs" / "pipeline" / "sft.yaml"
    sft.write_text(sft.read_text().replace("learning_rate:", "learning_rat:"))
    edited = cli("validate", pipeline)
    assert edited.exit_code == 2
    assert "sft.yaml: trainer.learning_rat: not a field of TRL's SFTConfig" in edited.stderr
    again = cli("recipes", "cp", "quickstart", f"{tmp_path / 'qs'}/")
    assert again.exit_code == 2 and "exist; pass --force to replace them" in again.stderr
    assert "learning_rat:" in sft.read_text()  # nothing was replaced


def test_a_copied_recipe_that_extends_a_shipped_one_still_validates(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("recipes", "cp", "gsm8k-dapo", "mine/").exit_code == 0
    assert "extends: gsm8k-grpo" in (tmp_path / "mine" / "gsm8k-dapo.yaml").read_text()
    assert cli("validate", "mine/gsm8k-dapo.yaml").exit_code == 0
    # A recipe of one's own that extends a file next to it: the copy elsewhere extends that same file.
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "base.yaml").write_text((shipped_recipes()["addition"]).read_text())
    (tmp_path / "proj" / "child.yaml").write_text("extends: base.yaml\ntrainer: {max_steps: 7}\n")
    assert cli("recipes", "cp", "proj/child.yaml", "elsewhere/").exit_code == 0
    copied = yaml.safe_load((tmp_path / "elsewhere" / "child.yaml").read_text())
    assert copied["extends"] == str(tmp_path / "proj" / "base.yaml")
    assert cli("validate", "elsewhere/child.yaml").exit_code == 0


def test_unknown_shipped_recipe(cli):
    result = cli("recipes", "show", "quikstart")
    assert result.exit_code == 2
    assert "no recipe file or shipped recipe named 'quikstart' (did you mean 'quickstart'?)" in result.stderr
