"""Where the shipped recipes and built-in rewards live.

In a wheel they are inside the package (`grpo_cli/_shipped/...`, see pyproject.toml); in a source checkout or an
editable install they are the top-level `recipes/` and `rewards/` folders of the repository.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    installed = _PACKAGE_DIR / "_shipped" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name


RECIPES_DIR = _shipped("recipes")
REWARDS_DIR = _shipped("rewards")
