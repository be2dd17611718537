"""A real tiny GRPO run end to end: outputs, weights that changed, metrics, no clobbering, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def adapter_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 4-step run shared by the tests below (checkpoints at steps 2 and 4)."""
    from typer.testing import CliRunner

    from grpo_cli.cli import app
    from tests.helpers import TINY_RECIPE

    tmp = tmp_path_factory.mktemp("grpo")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(tmp / "run")}))
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output + str(result.exception)
    return recipe, tmp / "run", result


def test_run_writes_the_layout(trained):
    _recipe, run, result = trained
    for name in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoint-2",
        "checkpoint-4",
        "base_model/config.json",
    ]:
        assert (run / name).exists(), name
    assert "done: 4 steps" in result.stdout


def test_says_what_it_does_before_the_progress_bar(trained):
    from tests.helpers import phase_names

    _recipe, _run, result = trained
    assert phase_names(result.stderr) == [
        "importing TRL to check the trainer settings",
        "loading model qwen2 built from a config",
        "loading dataset addition (generated, 40 rows)",
        "preparing 32 prompts",  # 40 rows, 8 held out (eval_size)
        "setting up GRPO",
    ]


def test_every_adapter_weight_changed(trained):
    _, run, _ = trained
    final = adapter_tensors(run)
    halfway = adapter_tensors(run / "checkpoint-2")
    assert final.keys() == halfway.keys() and len(final) > 0
    for name, tensor in final.items():
        assert not tensor.eq(halfway[name]).all(), f"{name} did not change between step 2 and step 4"
        if "lora_B" in name:
            assert tensor.abs().sum() > 0, f"{name} is still at its zero initialisation"


def test_metrics_has_every_logged_step_with_shared_names(trained):
    _, run, _ = trained
    rows = metric_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in [
            "reward",
            "rewards/accuracy",
            "rewards/closeness",
            "loss",
            "learning_rate",
            "completion_length",
            "time",
            "rewards/accuracy/errors",
        ]:
            assert key in row, key
        assert row["reward"] == pytest.approx(
            row["rewards/accuracy"] + 0.5 * row["rewards/closeness"], abs=1e-5
        )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["algorithm"] == "grpo"
    assert summary["first_reward"] == rows[0]["reward"] and summary["last_reward"] == rows[-1]["reward"]


def test_saved_recipe_is_the_resolved_one(trained):
    from grpo_cli.recipe import load_recipe

    recipe, run, _ = trained
    assert load_recipe(run / "recipe.yaml").model_dump() == load_recipe(recipe).model_dump()


def test_refuses_to_overwrite_a_previous_run(trained, cli):
    recipe, run, _ = trained
    before = (run / "metrics.jsonl").read_text()
    result = cli("train", recipe)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {run} already holds a run; pass --resume to continue it, --overwrite to replace it, "
        "or --output-dir to write elsewhere"
    )
    assert (run / "metrics.jsonl").read_text() == before
    assert cli("train", recipe, "--resume", "--overwrite").exit_code == 2


def test_resume_continues_the_step_count(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = cli("train", recipe, "trainer.max_steps=6", "--output-dir", copy, "--resume")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert "resuming from" in result.stderr and "checkpoint-4" in result.stderr
    assert [r["step"] for r in metric_rows(copy)] == [1, 2, 3, 4, 5, 6]
    assert metric_rows(copy)[:4] == metric_rows(run)
    state = json.loads((copy / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert json.loads((copy / "summary.json").read_text())["resumed_from"] == "checkpoint-4"


def test_resume_without_a_run_is_an_error(tiny_recipe, cli):
    result = cli("train", tiny_recipe(), "--resume")
    assert result.exit_code == 2
    assert "holds no run to resume; run without --resume" in result.stderr


def test_overwrite_replaces_the_run(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint-9").mkdir()  # stale parts of the old run go
    (copy / "notes.md").write_text("mine")  # a user's file stays (it was deleted before: issue 10)
    (copy / "eval").mkdir()
    old_id = json.loads((copy / "run.json").read_text())["run_id"]
    result = cli("train", recipe, "trainer.max_steps=2", "--output-dir", copy, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (copy / "checkpoint-9").exists() and not (copy / "checkpoint-4").exists()
    assert (copy / "notes.md").read_text() == "mine" and (copy / "eval").is_dir()
    assert f"kept in {copy}, not part of the run: eval, notes.md" in result.stderr
    assert json.loads((copy / "run.json").read_text())["run_id"] != old_id
    assert [r["step"] for r in metric_rows(copy)] == [1, 2]


def test_full_fine_tuning_without_lora(tiny_recipe, cli, tmp_path):
    from safetensors.torch import load_file

    from grpo_cli import models
    from grpo_cli.recipe import load_recipe

    # beta > 0: TRL builds the reference model from the base saved in the run (nothing else has those weights).
    path = tiny_recipe({"lora": None, "trainer": {"max_steps": 2, "beta": 0.1}})
    result = cli("train", path)
    assert result.exit_code == 0, result.output
    run = Path(load_recipe(path).output_dir)
    assert not (run / "adapter_config.json").exists()
    trained_weights = load_file(run / "model.safetensors")
    initial, _ = models.build_from_config(load_recipe(path).model.from_config, seed=0)
    changed = [
        name
        for name, p in initial.named_parameters()
        if name in trained_weights and not p.eq(trained_weights[name]).all()
    ]
    assert len(changed) >= len(trained_weights) - 1  # everything trained (a tied head shares the embedding)
    rows = metric_rows(run)
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] > 0  # the policy moved away from the reference after step 1


def test_overwrite_never_deletes_a_directory_that_holds_no_run(tiny_recipe, cli, tmp_path):
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    result = cli("train", tiny_recipe(), "--output-dir", mine, "--overwrite")
    assert result.exit_code == 2
    assert "is not empty and holds no grpo-cli run; give an empty or new --output-dir" in result.stderr
    assert (mine / "notes.txt").read_text() == "precious"


def test_overwrite_keeps_the_old_run_when_loading_fails(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (tmp_path / "missing-model").mkdir()
    result = cli(
        "train",
        recipe,
        "--output-dir",
        copy,
        "--overwrite",
        "model.from_config=null",
        f"model.name_or_path={tmp_path / 'missing-model'}",
    )
    assert result.exit_code == 2 and "cannot load tokenizer" in result.stderr
    assert metric_rows(copy) == metric_rows(run)  # the previous run is untouched


def test_resume_with_another_model_is_refused(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = cli("train", recipe, "--output-dir", copy, "--resume", "lora.r=8")
    assert result.exit_code == 2
    assert "--resume: the recipe's lora differ from the run in" in result.stderr


def test_resume_of_a_finished_run_changes_nothing(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    for max_steps in ("4", "2"):  # the same or a lower max_steps
        result = cli("train", recipe, f"trainer.max_steps={max_steps}", "--output-dir", copy, "--resume")
        assert result.exit_code == 0, result.output
        assert (
            f"{copy} is complete: it trained 4 steps (trainer.max_steps={max_steps}); nothing to do"
            in result.stdout
        )
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before  # no checkpoint-5, the same adapter, metrics and summary


def test_resume_with_a_longer_max_steps_trains_from_the_first_resumed_step(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = cli("train", recipe, "trainer.max_steps=8", "--output-dir", copy, "--resume")
    assert result.exit_code == 0, result.output
    # linear schedule, lr 0.05: recomputed over 8 steps, step 5 runs at 0.05 x (8 - 4) / 8 (the old one was at 0)
    assert "max_steps 4 -> 8: the learning-rate schedule (linear) now spans 8 steps" in result.stderr
    assert "step 5 runs at lr 0.025 (the old schedule was at 0)" in result.stderr
    rows = metric_rows(copy)
    assert [r["step"] for r in rows] == list(range(1, 9))
    # each row: the rate its step ran at; step 5 ran at 0.0 before, then jumped to 0.01875
    assert [r["learning_rate"] for r in rows[4:]] == pytest.approx([0.025, 0.01875, 0.0125, 0.00625])


def test_resume_of_a_run_with_a_damaged_recipe_is_one_line(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "recipe.yaml").write_text("model: [unclosed\n  lora: {")
    result = cli("train", recipe, "--output-dir", copy, "--resume", "trainer.max_steps=6")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --resume: {copy / 'recipe.yaml'} is damaged")


def test_a_run_that_never_reached_a_checkpoint_can_be_overwritten(trained, cli, tmp_path):
    import shutil

    recipe, run, _ = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("run.json", "recipe.yaml", "base_model"):  # stopped right after base_model/ was written
        (shutil.copytree if (run / name).is_dir() else shutil.copy)(run / name, copy / name)
    assert "never reached its first checkpoint" in cli("train", recipe, "-o", copy, "--resume").stderr
    result = cli("train", recipe, "trainer.max_steps=2", "-o", copy, "--overwrite")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in metric_rows(copy)] == [1, 2]


def test_the_weights_follow_the_umask_as_every_other_run_file(trained):
    """Issue 23 item 15: safetensors and torch.save wrote the weights 0600 while every other file followed the
    umask (0022 here): a group that could read the recipe could not read the model."""
    import os

    _recipe, run, _ = trained
    umask = os.umask(0)
    os.umask(umask)
    weights = [
        p for p in run.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth")
    ]
    assert any(p.parent.name.startswith("checkpoint-") for p in weights) and (run / "base_model").is_dir()
    assert {p.relative_to(run).as_posix(): oct(p.stat().st_mode & 0o777) for p in weights} == {
        p.relative_to(run).as_posix(): oct(0o666 & ~umask) for p in weights
    }


def test_run_json_holds_the_manifest_and_the_card_shows_it(trained):
    from importlib import metadata

    recipe, run, _ = trained
    marker = json.loads((run / "run.json").read_text())
    described = marker["manifest"]
    assert described["versions"]["transformers"] == metadata.version("transformers")
    assert described["seed"] == 0 and described["data"] and described["command"].startswith("grpo-cli ")
    assert described["recipe"] == str(recipe)
    card = (run / "README.md").read_text()
    assert "## Reproducibility" in card and f"recipe hash `{described['recipe_hash']}`" in card


def test_resume_with_other_versions_says_what_changed(trained, cli, tmp_path):
    recipe, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = json.loads((copy / "run.json").read_text())
    installed = marker["manifest"]["versions"]["trl"]
    marker["manifest"]["versions"]["trl"] = "0.0.1"
    (copy / "run.json").write_text(json.dumps(marker))
    result = cli("train", recipe, "trainer.max_steps=5", "--output-dir", copy, "--resume")
    assert result.exit_code == 0, result.output + str(result.exception)
    assert f"with changes since the run began: trl 0.0.1 -> {installed}" in result.stderr
    resumes = json.loads((copy / "run.json").read_text())["resumes"]
    assert [r["changed"] for r in resumes] == [[f"trl 0.0.1 -> {installed}"]]
