"""Issue 23 item 15: every model and tokenizer load passes `trust_remote_code` itself (the recipe's
model.trust_remote_code, else False), so transformers never asks "run the custom code? [y/N]" on a terminal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "grpo_cli"
# Loaders of grpo_cli that pass the keyword on to from_pretrained: their callers must give it too.
LOADERS = {
    "load_tokenizer",
    "load_reward_model",
    "load_reward_models",
    "load_exported",
    "load_exported_adapter",
}


def calls_without_trust_remote_code(package: Path = PACKAGE) -> list[str]:
    missing = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            receiver = getattr(func, "value", None)
            # peft's adapters carry no code: PeftModel.from_pretrained loads weights onto a model already built.
            if name == "from_pretrained" and getattr(receiver, "id", None) == "PeftModel":
                continue
            if name != "from_pretrained" and name not in LOADERS:
                continue
            if not any(k.arg == "trust_remote_code" for k in node.keywords):
                missing.append(f"{path.relative_to(package.parent)}:{node.lineno} {ast.unparse(func)}")
    return missing


def test_every_model_and_tokenizer_load_passes_trust_remote_code():
    assert calls_without_trust_remote_code() == []


def test_a_reward_model_loads_with_the_recipes_trust_remote_code(monkeypatch, reward_model_dir):
    """The reward-model loader, the one that printed transformers' prompt: it passes the value it is given."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from grpo_cli import reward_models
    from grpo_cli.recipe import RewardEntry
    from grpo_cli.reward_binding import bind_all

    seen = []
    for cls in (AutoModelForSequenceClassification, AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code", "absent")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    bound = bind_all([RewardEntry(name=f"model:{reward_model_dir}")])
    for trust in (False, True):
        seen.clear()
        reward_models.load_reward_models(bound, "float32", device="cpu", trust_remote_code=trust)
        assert seen and all(value is trust for _cls, value in seen), seen


@pytest.mark.parametrize("missing", ["AutoModel.from_pretrained(name)", "models.load_tokenizer(path)"])
def test_the_scan_finds_a_call_without_it(tmp_path, missing):
    (tmp_path / "grpo_cli").mkdir()
    (tmp_path / "grpo_cli" / "x.py").write_text(
        f"{missing}\nPeftModel.from_pretrained(base, path)\nAutoModel.from_pretrained(n, trust_remote_code=t)\n"
    )
    assert calls_without_trust_remote_code(tmp_path / "grpo_cli") == [
        f"grpo_cli/x.py:1 {missing.split('(')[0]}"
    ]
