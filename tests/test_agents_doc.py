"""docs/agents.md's worked example runs: its files, written as the page shows them, validate as the page says."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "agents.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def test_the_worked_example_validates(cli, tmp_path, monkeypatch):
    tools, environment = blocks("python")
    (recipe,) = blocks("yaml")
    (tmp_path / "calc.py").write_text(tools)
    (tmp_path / "env.py").write_text(environment)
    (tmp_path / "tools.yaml").write_text(recipe)
    monkeypatch.chdir(tmp_path)
    result = cli("validate", "tools.yaml")
    assert result.exit_code == 0, result.output
    (session,) = blocks("console")
    assert result.stdout.strip() == session.splitlines()[1]
    # The environment example owns its reward: a recipe naming it needs none.
    (tmp_path / "env.yaml").write_text(
        recipe.replace(
            "tools: [{name: ./calc.py:add}, {name: ./calc.py:mul}]", "environment: {name: ./env.py:Counter}"
        ).replace("rewards: [{name: accuracy}]", "")
    )
    result = cli("validate", "env.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "env.yaml: ok (grpo, 0 rewards)"
