"""Settings validate used to accept and train then ran with (or crashed on): each is one line and exit 2, with the
valid range, before anything loads. And a run that trains nothing never reports success."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_cli import distributed


def refused(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result.stderr.strip()


@pytest.mark.parametrize(
    ("recipe", "override", "expected"),
    [
        (
            "addition",
            "trainer.max_steps=0",
            "trainer.max_steps: must be at least 1 (or -1: train num_train_epochs), got 0",
        ),
        (
            "addition-ppo",
            "trainer.max_steps=-3",
            "trainer.max_steps: must be at least 1 (or -1: train num_train_epochs), got -3",
        ),
        ("pipeline/sft", "trainer.max_length=0", "trainer.max_length: must be at least 1, got 0"),
        ("addition", "trainer.beta=-0.1", "trainer.beta: must be at least 0, got -0.1"),
        ("addition", "trainer.epsilon=-1", "trainer.epsilon: must be at least 0, got -1"),
        ("addition", "trainer.top_k=-5", "trainer.top_k: must be at least 0, got -5"),
        ("addition-ppo", "trainer.kl_coef=-1", "trainer.kl_coef: must be at least 0, got -1"),
        ("addition-ppo", "trainer.cliprange=-0.2", "trainer.cliprange: must be at least 0, got -0.2"),
        ("addition-ppo", "trainer.vf_coef=-1", "trainer.vf_coef: must be at least 0, got -1"),
        ("addition-ppo", "trainer.gamma=2", "trainer.gamma: must be at most 1, got 2"),
        ("addition-ppo", "trainer.lam=-1", "trainer.lam: must be at least 0, got -1"),
        ("addition", "lora.target_modules=[]", "lora.target_modules: an empty list adapts nothing"),
        ("addition", "lora.alpha=.inf", "lora.alpha: Input should be a finite number"),
        ("addition", f"lora.r={2**70}", "lora.r: Input should be less than or equal to 65536"),
        (
            "addition",
            "trainer.max_steps=true",
            "trainer.max_steps: expected int, got True (true/false is no number)",
        ),
        (
            "addition",
            "trainer.learning_rate=true",
            "trainer.learning_rate: expected float, got True (true/false is no number)",
        ),
        ("addition", "trainer.fp16=true trainer.bf16=true", "trainer: give fp16 or bf16, not both"),
    ],
)
def test_nonsense_settings_are_refused_with_the_range(cli, recipe, override, expected):
    assert expected in refused(cli("validate", recipe, *override.split()))


def test_half_precision_without_a_gpu(cli, monkeypatch):
    monkeypatch.setattr(distributed, "gpu_present", lambda: False)
    assert "trainer.fp16: half precision needs a GPU" in refused(
        cli("validate", "addition", "trainer.fp16=true")
    )


def test_what_is_not_installed(cli, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("vllm", "wandb") else real(name, *a)
    )
    assert "vLLM is not installed" in refused(cli("validate", "addition", "trainer.use_vllm=true"))
    assert 'wandb is not installed (pip install "grpo-cli[wandb]")' in refused(
        cli("validate", "addition", "trainer.report_to=wandb")
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model:/nonexistent/reward-model", "/nonexistent/reward-model does not exist"),
        ("model:/etc", "/etc holds no model (no config.json)"),
        (f"model:{Path(__file__).resolve()}", "is a file; give a saved reward model's directory"),
    ],
)
def test_a_model_reward_that_names_no_model(cli, tmp_path, name, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        f"dataset: {{generate: {{task: addition}}, prompt: '{{question}}'}}\nrewards: [{{name: '{name}'}}]\n"
    )
    assert expected in refused(cli("validate", recipe))


def test_a_model_reward_by_hub_id_is_left_to_loading(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        "dataset: {generate: {task: addition}, prompt: '{question}'}\nrewards: [{name: 'model:Org/reward'}]\n"
    )
    assert cli("validate", recipe).exit_code == 0


def test_a_pipeline_whose_ppo_stage_needs_a_reward_run_no_stage_writes(cli, tmp_path, monkeypatch):
    from grpo_cli._paths import RECIPES_DIR

    monkeypatch.chdir(tmp_path)
    for stage in ("sft", "ppo"):
        (tmp_path / f"{stage}.yaml").write_text((RECIPES_DIR / "pipeline" / f"{stage}.yaml").read_text())
    (tmp_path / "p.yaml").write_text("stages: [sft.yaml, ppo.yaml]\n")
    message = refused(cli("validate", "p.yaml"))
    assert f"no earlier stage writes {tmp_path / 'runs' / 'pipeline-reward'} and it does not exist" in message


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("addition", "dataset: 10 training prompts, fewer than the 44 one GRPO generation takes"),
        ("addition-ppo", "dataset: 10 training rows, fewer than the 64 prompts one PPO step samples"),
    ],
)
def test_fewer_rows_than_one_step_takes(cli, recipe, expected):
    assert expected in refused(cli("validate", recipe, "dataset.limit=10"))


def test_a_run_that_would_train_nothing_stops_once_its_rows_are_counted(cli, tmp_path, monkeypatch):
    """Where validate cannot count the rows (a Hub dataset), train counts them once loaded, before the run
    directory is touched: never `done: 0 steps` (and with older TRL/transformers, never their TypeError)."""
    from grpo_cli import validation

    monkeypatch.setattr(validation, "known_training_rows", lambda recipe: None)
    out = tmp_path / "zero"
    result = cli("train", "addition", "dataset.limit=10", "trainer.max_steps=5", "-o", out)
    assert "dataset: 10 training prompts, fewer than the 44 one GRPO generation takes" in refused(result)
    assert "done:" not in result.stdout and not out.exists()
