"""Shared fixtures: a tiny offline recipe, and running the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import PPO_RECIPE, TINY_RECIPE, tiny_reward_model

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _recipe_writer(tmp_path: Path, base: dict, default_name: str):
    """`write(changes, name)`: `base` with `changes` deep-merged (mappings merge key by key, anything else,
    None and lists included, replaces), written into tmp_path with an output_dir under tmp_path/runs."""
    from grpo_cli.recipe_files import deep_merge

    def write(changes: dict | None = None, name: str = default_name) -> Path:
        data = deep_merge(base, changes or {})
        data.setdefault("output_dir", str(tmp_path / "runs" / Path(name).stem))
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def tiny_recipe(tmp_path):
    """Write a tiny GRPO recipe (with optional deep-merged changes) into tmp_path; return its path."""
    return _recipe_writer(tmp_path, TINY_RECIPE, "tiny.yaml")


@pytest.fixture
def ppo_recipe(tmp_path):
    """Write PPO_RECIPE (with optional deep-merged changes, as tiny_recipe) into tmp_path; return its path."""
    return _recipe_writer(tmp_path, PPO_RECIPE, "ppo.yaml")


@pytest.fixture(autouse=True)
def isolated_entry_points(monkeypatch):
    """Plugins installed where the tests run stay out of them: the entry points of grpo-cli's groups
    (`grpo_cli.rewards`, ...) are those of distributions on sys.path entries a test adds itself (fake_plugin, acme),
    never the environment's. The registry's cache of entry points is cleared before and after each test."""
    import importlib.metadata
    import sys

    from grpo_cli import registry

    real = importlib.metadata.entry_points
    environment = set(sys.path)

    def entry_points(**params):
        group = params.get("group") or ""
        if not group.startswith("grpo_cli."):
            return real(**params)
        added = [p for p in sys.path if p not in environment]
        found = [
            ep
            for dist in importlib.metadata.distributions(path=added)
            for ep in dist.entry_points
            if ep.group == group
        ]
        return importlib.metadata.EntryPoints(found)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry.clear_caches()
    yield
    registry.clear_caches()


@pytest.fixture
def cli():
    """Run `grpo-cli ARGS...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from grpo_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def one_torch_thread():
    """Train on one thread: the tiny models are too small to split, and on a busy shared machine two threads each
    fighting for a core made a run seven times slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reward_model_dir(tmp_path) -> Path:
    """A tiny randomly initialised sequence-classification model and its tokenizer, saved like a real one."""
    from grpo_cli.models import char_tokenizer

    tokenizer = char_tokenizer("0123456789+=")
    path = tmp_path / "judge"
    tiny_reward_model(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
