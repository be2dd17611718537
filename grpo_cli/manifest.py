"""What produced a run: package versions, the machine, the resolved recipe's hash, the data and model it read,
the seed, the command line and the git state of the recipe's directory.

The manifest is written into run.json (`manifest`) when a run begins; a resume compares it with the present and
names what changed. `report` and the model card show it (`markdown`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_cli import devices

if TYPE_CHECKING:
    from grpo_cli.recipe import Recipe

PACKAGES = ("grpo-cli", "trl", "transformers", "peft", "torch", "accelerate", "datasets")
# A data file bigger than this is identified by size and modification time instead of read through (a many-GB
# corpus would add minutes to every start).
HASH_LIMIT = 2 << 30
GIT_TIMEOUT_S = 5


def versions() -> dict[str, str | None]:
    """The installed version of each package that decides what a run computes (None: not installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_digest(path: Path) -> str:
    """`sha256:<hex>` of a file, or `size:<bytes>,mtime:<seconds>` past HASH_LIMIT."""
    stat = path.stat()
    if stat.st_size > HASH_LIMIT:
        return f"size:{stat.st_size},mtime:{int(stat.st_mtime)}"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def recipe_digest(recipe: Recipe) -> str:
    """The resolved recipe's hash (after `extends:` and overrides), output_dir left out: the same recipe trained
    into two directories (a sweep, `-o`) hashes the same."""
    data = recipe.model_dump(mode="json")
    data.pop("output_dir", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _local_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))[:1000]
    return []


def data_sources(recipe: Recipe) -> dict[str, str]:
    """What the dataset is, by name: each local file's digest, a Hub id with its revision when known, or the
    generated task with its settings (they make the same rows from the seed)."""
    dataset = recipe.dataset
    if dataset.generate is not None:
        settings = json.dumps(dataset.generate.model_dump(mode="json"), sort_keys=True)
        return {"generated": settings}
    files = _local_files(dataset.source)
    if files:
        return {str(p): file_digest(p) for p in files}
    name = dataset.source if dataset.config is None else f"{dataset.source} ({dataset.config})"
    return {name: f"hub:{_hub_revision(dataset.source, 'dataset') or 'unknown revision'}"}


def model_source(recipe: Recipe) -> dict[str, str | None]:
    """The model a run starts from: a local directory (its config's digest), a Hub id with the commit found in the
    local cache, another run, or a config it was built from."""
    model = recipe.model
    if model.name_or_path is None:
        return {"run": model.run} if model.run is not None else {"from_config": "built from a config"}
    path = Path(model.name_or_path)
    if path.is_dir():
        config = path / "config.json"
        return {"path": str(path), "config": file_digest(config) if config.is_file() else None}
    return {
        "hub": model.name_or_path,
        "revision": model.revision or _hub_revision(model.name_or_path, "model"),
    }


def _hub_revision(repo_id: str, repo_type: str) -> str | None:
    """The commit of `repo_id` the local Hub cache holds for its main branch (offline; None when not cached)."""
    try:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "refs" / "main"
        return cache.read_text().strip() or None
    except (OSError, ImportError, ValueError):
        return None


def git_state(directory: Path | None) -> dict | None:
    """The commit of the git repository holding `directory` and whether its work tree has changes; None outside
    a repository (or without git)."""
    if directory is None:
        return None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(changes), "repository": git("rev-parse", "--show-toplevel")}


def describe(recipe: Recipe) -> dict:
    """The manifest of a run of `recipe` started now, by this command, on this machine."""
    recipe_dir = recipe.path.parent if recipe.path is not None else None
    return {
        "versions": versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": devices.device_name(),
        "recipe": str(recipe.path) if recipe.path is not None else None,
        "recipe_hash": recipe_digest(recipe),
        "seed": recipe.seed,
        "command": shlex.join(["grpo-cli", *sys.argv[1:]]),
        "data": data_sources(recipe),
        "model": model_source(recipe),
        "git": git_state(recipe_dir),
    }


def markdown(manifest: dict | None, heading: str = "## Reproducibility") -> list[str]:
    """A "Reproducibility" section for the model card and report.md (nothing without a manifest)."""
    if not manifest:
        return []
    installed = ", ".join(f"{name} {v}" for name, v in (manifest.get("versions") or {}).items() if v)
    lines = [
        heading,
        "",
        f"- Command: `{manifest.get('command')}`",
        f"- Seed: {manifest.get('seed')}; recipe hash `{manifest.get('recipe_hash')}`",
        f"- Versions: {installed}; Python {manifest.get('python')}",
        f"- Machine: {manifest.get('platform')}, {manifest.get('device')}",
    ]
    git = manifest.get("git")
    if git:
        state = "with uncommitted changes" if git.get("dirty") else "clean"
        lines.append(f"- Recipe's repository: commit `{git.get('commit')}` ({state})")
    for name, digest in (manifest.get("data") or {}).items():
        lines.append(
            f"- Data: `{Path(name).name if digest.startswith(('sha256', 'size')) else name}` {digest}"
        )
    return [*lines, ""]
