#!/usr/bin/env bash
# CI: the dependency floors in pyproject.toml are true. A fresh virtual environment gets torch (as the README
# installs it), then the project with every dependency pinned to its floor (.ci/floors.py derives the pins from
# pyproject.toml, their one owner), and runs the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python .ci/floors.py > "$work/floors.txt"
echo "floors: $(tr '\n' ' ' < "$work/floors.txt")"
pip install --quiet torch==2.13.0
pip install --quiet --constraint "$work/floors.txt" ".[test]"
pytest -q -p no:cacheprovider
