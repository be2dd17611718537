"""The manifest in run.json: what produced a run, and what changed when it is resumed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from importlib import metadata

import pytest
import yaml

from grpo_cli import manifest
from grpo_cli.recipe import load_recipe
from grpo_cli.run_dir import manifest_changes
from tests.helpers import TINY_RECIPE


@pytest.fixture
def file_recipe(tmp_path):
    """A recipe reading a local JSONL file, in its own directory."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1=", "answer": "2"}\n' * 20)
    recipe = {**TINY_RECIPE, "dataset": {"source": "data.jsonl", "prompt": "{question}", "eval_size": 4}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, "output_dir": str(tmp_path / "run")}))
    return path, data


def test_describe_records_versions_seed_command_and_data_digests(file_recipe, monkeypatch):
    path, data = file_recipe
    monkeypatch.setattr("sys.argv", ["/somewhere/bin/grpo-cli", "train", str(path), "seed=7"])
    described = manifest.describe(load_recipe(path, ["seed=7"]))
    assert described["versions"]["trl"] == metadata.version("trl")
    assert described["versions"]["torch"] == metadata.version("torch")
    assert set(described["versions"]) == set(manifest.PACKAGES)
    assert described["seed"] == 7
    assert described["command"] == f"grpo-cli train {path} seed=7"
    assert described["data"] == {str(data): "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()}
    assert described["model"] == {"from_config": "built from a config"}
    assert described["device"] == "cpu"
    assert described["git"] is None  # tmp_path is in no repository
    json.dumps(described)  # run.json holds it as it is


def test_recipe_hash_ignores_output_dir_and_follows_everything_else(file_recipe):
    path, _ = file_recipe
    base = manifest.recipe_digest(load_recipe(path))
    assert manifest.recipe_digest(load_recipe(path, ["output_dir=elsewhere"])) == base
    assert manifest.recipe_digest(load_recipe(path, ["trainer.learning_rate=0.01"])) != base


def test_generated_data_is_named_by_its_settings(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    data = manifest.describe(load_recipe(path))["data"]
    assert list(data) == ["generated"] and json.loads(data["generated"])["task"] == "addition"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_says_commit_and_whether_the_tree_is_dirty(file_recipe):
    path, data = file_recipe
    repo = path.parent

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "recipe")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert manifest.git_state(repo) == {"commit": head, "dirty": False, "repository": str(repo.resolve())}
    data.write_text("changed\n")
    assert manifest.git_state(repo)["dirty"] is True


def test_changes_name_versions_data_and_recipe():
    before = {
        "versions": {"trl": "1.12.0", "torch": "2.13.0"},
        "data": {"/d/train.jsonl": "sha256:aa", "/d/old.jsonl": "sha256:bb"},
        "model": {"hub": "m", "revision": "r1"},
        "recipe_hash": "sha256:1",
        "git": {"commit": "a" * 40},
        "command": "grpo-cli train x",
    }
    now = {
        **before,
        "versions": {"trl": "1.12.1", "torch": "2.13.0"},
        "data": {"/d/train.jsonl": "sha256:cc", "/d/new.jsonl": "sha256:dd"},
        "command": "grpo-cli train x --resume",
    }
    assert manifest_changes(before, now) == [
        "trl 1.12.0 -> 1.12.1",
        "data new.jsonl added",
        "data old.jsonl gone",
        "data train.jsonl changed",
    ]
    assert manifest_changes(before, {**before, "command": "other"}) == []


def test_markdown_shows_command_versions_and_git_state():
    lines = manifest.markdown(
        {
            "command": "grpo-cli train r.yaml",
            "seed": 3,
            "recipe_hash": "sha256:ab",
            "versions": {"trl": "1.12.0", "peft": None},
            "python": "3.12.1",
            "platform": "Linux",
            "device": "cpu",
            "git": {"commit": "c0ffee", "dirty": True},
            "data": {"/d/train.jsonl": "sha256:aa"},
        }
    )
    assert lines[0] == "## Reproducibility"
    assert "- Command: `grpo-cli train r.yaml`" in lines
    assert "- Versions: trl 1.12.0; Python 3.12.1" in lines
    assert "- Recipe's repository: commit `c0ffee` (with uncommitted changes)" in lines
    assert "- Data: `train.jsonl` sha256:aa" in lines
    assert manifest.markdown(None) == []
