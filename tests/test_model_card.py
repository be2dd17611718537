"""The model card (README.md) of a run and of an export: Hub front matter that parses as YAML and names the base
model when the Hub knows it, and what the run was (LoRA, data, rewards with weights, summary, eval, reward curve,
how to load and upload it). `train` writing it is covered by the slow tests in test_export.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grpo_cli import model_card, run_files
from tests.tiny_runs import fake_run

HUB_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    assert body.strip()
    return yaml.safe_load(header)


def hub_run(directory: Path, *, lora: bool = True) -> Path:
    """A run directory's files as the card reads them, for a Hub model (nothing is loaded)."""
    run = directory / "gsm8k"
    (run / "eval").mkdir(parents=True)
    (run / "report").mkdir()
    recipe = {
        "algorithm": "ppo",
        "seed": 3,
        "model": {"name_or_path": HUB_MODEL, "dtype": "auto"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"} if lora else None,
        "dataset": {"source": "openai/gsm8k", "config": "main", "split": "train", "prompt": "{question}"},
        "rewards": [
            {"name": "accuracy", "weight": 1.0},
            {"name": "format", "weight": 0.2, "args": {"tag": "x"}},
        ],
        "trainer": {"learning_rate": 1e-5, "max_steps": 500},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    if lora:
        (run / "adapter_config.json").write_text("{}")
    (run / "summary.json").write_text(
        json.dumps(
            {"algorithm": "ppo", "steps": 500, "wall_time_s": 3600, "first_reward": 0.12, "last_reward": 0.71}
        )
    )
    metrics = {"reward": 0.7, "rewards/accuracy": 0.65, "rewards/accuracy/pass@1": 0.65}
    evaluation = {
        "settings": {"num_prompts": 200, "num_samples": 1, "decoding": "greedy"},
        "metrics": {
            "tuned": metrics,
            "base": {k: v / 2 for k, v in metrics.items()},
            "delta": {"reward": 0.35},
        },
        "created_at": "2026-11-21T09:00:00+0000",
    }
    (run / "eval" / "eval.json").write_text(json.dumps(evaluation))
    (run / "report" / "reward.png").write_bytes(b"\x89PNG fake")
    return run


def test_run_card_of_a_lora_run_on_a_hub_model(tmp_path):
    run = hub_run(tmp_path)
    text = model_card.write_run_card(run).read_text()
    meta = front_matter(text)
    assert meta["base_model"] == HUB_MODEL
    assert (meta["library_name"], meta["pipeline_tag"]) == ("peft", "text-generation")
    assert {"grpo-cli", "trl", "ppo", "lora", "peft"} <= set(meta["tags"])
    for expected in [
        "LoRA: r=16, alpha=32, dropout=0.05, target modules: all-linear",
        "Algorithm: PPO",
        "`openai/gsm8k` (config `main`), split `train`",
        "| `accuracy` | 1 |  |",
        '| `format` | 0.2 | {"tag": "x"} |',
        "Steps: 500, wall time 60.0 min",
        "Mean reward: 0.120 (first step) -> 0.710 (last step)",
        "| metric | tuned | base | delta |",
        "| rewards/accuracy/pass@1 | 0.650 | 0.325 | - |",
        "| reward | 0.700 | 0.350 | +0.350 |",
        "![mean reward per step](report/reward.png)",
        f'PeftModel.from_pretrained(base, "{run}")',
        f"vllm serve {HUB_MODEL} --enable-lora",
        f"grpo-cli export {run} -o EXPORTED_DIR",
        "hf upload YOUR_NAME/gsm8k EXPORTED_DIR",
    ]:
        assert expected in text, expected


def test_export_card_copies_the_reward_curve(tmp_path):
    run = hub_run(tmp_path, lora=False)
    out = tmp_path / "exported"
    out.mkdir()
    text = model_card.write_export_card(out, run, kind="full").read_text()
    meta = front_matter(text)
    assert (meta["base_model"], meta["library_name"]) == (HUB_MODEL, "transformers")
    assert "lora" not in meta["tags"] and "Full fine-tuning (no LoRA)" in text
    assert (out / "reward.png").read_bytes() == b"\x89PNG fake"
    assert "![mean reward per step](reward.png)" in text
    assert 'AutoModelForCausalLM.from_pretrained(".")' in text and "vllm serve ." in text
    assert "hf upload YOUR_NAME/gsm8k ." in text


def test_a_base_the_hub_does_not_know_stays_out_of_the_front_matter(tmp_path):
    run = fake_run(tmp_path)  # built from a config
    text = model_card.write_run_card(run).read_text()
    meta = front_matter(text)
    assert "base_model" not in meta
    assert "a randomly initialised `qwen2` built from a config" in text
    assert "Steps: 4" in text and "## Evaluation" not in text and "reward.png" not in text
    assert f'AutoModelForCausalLM.from_pretrained("{run}/base_model")' in text

    local = tmp_path / "local-model"
    local.mkdir()
    assert model_card.hub_id(str(local)) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (HUB_MODEL, HUB_MODEL),
        ("gpt2", "gpt2"),
        ("./models/x", None),
        ("/abs/path", None),
        ("a/b/c", None),
        (None, None),
    ],
)
def test_hub_id(name, expected):
    assert model_card.hub_id(name) == expected


def test_train_writes_the_card(cli, tiny_recipe, monkeypatch):
    """`train` calls write_run_card once the run is saved (the algorithm itself is stubbed: no training here)."""
    from grpo_cli.algorithms import grpo

    def fake_train(recipe, out, resume_from=None):
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        summary = {
            "algorithm": "grpo",
            "steps": 4,
            "wall_time_s": 1.0,
            "first_reward": 0.0,
            "last_reward": 1.0,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(grpo, "train", fake_train)
    path = tiny_recipe()
    result = cli("train", path)
    assert result.exit_code == 0, result.output
    out = Path(yaml.safe_load(path.read_text())["output_dir"])
    assert "Mean reward: 0.000 (first step) -> 1.000 (last step)" in (out / "README.md").read_text()


def test_a_damaged_eval_result_leaves_the_card_without_it_and_says_so(tmp_path, capsys):
    """The card is written when training ends: a damaged RUN/eval/eval.json must not fail the run it describes."""
    from grpo_cli import output

    run = fake_run(tmp_path)
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text("{not json")
    output._warned.clear()
    card = model_card.write_run_card(run).read_text()
    assert "## Evaluation" not in card and "trained with" in card
    assert "eval.json is damaged" in capsys.readouterr().err


def test_a_chained_run_says_which_run_it_started_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sft = tmp_path / "runs" / "sft"
    sft.mkdir(parents=True)
    (sft / "run.json").write_text('{"algorithm": "sft"}')
    run = hub_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "model": {"run": str(sft)}}))
    lines = model_card.write_run_card(run).read_text().splitlines()
    assert (
        "A LoRA adapter trained with PPO by grpo-cli (on TRL), from the SFT run `runs/sft` (the model it trained)."
        in lines
    )
    out = tmp_path / "exported"
    out.mkdir()
    lines = model_card.write_export_card(out, run, kind="merged").read_text().splitlines()
    assert (
        "A standalone model (the LoRA adapter merged into its base) trained with PPO by grpo-cli (on TRL), "
        "from the SFT run `runs/sft` (the model it trained)."
    ) in lines
    assert not any("None" in line for line in lines)


def test_a_reward_run_card_says_what_it_is_and_how_to_score(tmp_path, monkeypatch, cli):
    from tests.tiny_runs import fake_reward_run

    monkeypatch.chdir(tmp_path)
    run = fake_reward_run(tmp_path, lora=False)
    assert cli("export", "rm", "-o", "exported").exit_code == 0
    text = (tmp_path / "exported" / "README.md").read_text()
    lines = text.splitlines()
    assert front_matter(text)["pipeline_tag"] == "text-classification"
    assert (
        "A reward model (a fully fine-tuned model): a one-label sequence classifier that scores a prompt and its "
        "answer, trained with TRL's RewardTrainer on preference pairs (chosen vs rejected) by grpo-cli, from "
        "`judge` (a local directory)."
    ) in lines
    assert "REWARD by" not in text and "| reward | weight | args |" not in text
    snippet = [
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        'model = AutoModelForSequenceClassification.from_pretrained(".")',
        'tokenizer = AutoTokenizer.from_pretrained(".")',
        'text = "YOUR PROMPT" + "AN ANSWER"',
        'inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)',
        "score = model(**inputs).logits[0, 0].item()",
    ]
    start = lines.index(snippet[0])
    assert lines[start : start + len(snippet)] == snippet
    # The snippet runs, from the export's folder, and scores as the run does.
    monkeypatch.chdir(tmp_path / "exported")
    scope: dict = {}
    exec("\n".join(snippet).replace("YOUR PROMPT", "1+2=").replace("AN ANSWER", "3"), scope)
    model, tokenizer = __import__("grpo_cli.models").models.load_reward_model(run, None)
    import torch

    with torch.inference_mode():
        expected = (
            model(**tokenizer("1+2=3", return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
        )
    assert scope["score"] == pytest.approx(expected, abs=1e-4)


def test_a_chat_models_usage_applies_the_chat_template_with_the_system_prompt(tmp_path, cli):
    from tests.tiny_runs import CHAT_TEMPLATE

    run = fake_run(tmp_path, chat_template=CHAT_TEMPLATE, changes={"dataset": {"system_prompt": "Add."}})
    assert cli("export", run, "-o", tmp_path / "exported").exit_code == 0
    lines = (tmp_path / "exported" / "README.md").read_text().splitlines()
    snippet = [
        "messages = [",
        '    {"role": "system", "content": "Add."},',
        '    {"role": "user", "content": "YOUR PROMPT"},',
        "]",
        "inputs = tokenizer.apply_chat_template(",
        '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
        ")",
        "output = model.generate(**inputs)  # stops at the EOS used in training (generation_config.json)",
    ]
    start = lines.index(snippet[0])
    assert lines[start : start + len(snippet)] == snippet
    assert 'inputs = tokenizer("YOUR PROMPT", return_tensors="pt")' not in lines


def test_cards_name_local_data_and_rewards_without_this_machines_paths(tmp_path):
    run = hub_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["dataset"] = {"source": str(tmp_path / "data" / "train.jsonl"), "prompt": "{question}"}
    recipe["rewards"] = [
        {"name": f"{tmp_path}/rewards.py:exact", "weight": 1.0},
        {"name": f"model:{tmp_path}/runs/rm", "weight": 0.5},
    ]
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "exported"
    out.mkdir()
    text = model_card.write_export_card(out, run, kind="adapter", base=HUB_MODEL).read_text()
    lines = text.splitlines()
    assert "- Dataset: `train.jsonl`, split `train`" in lines
    assert "| `rewards.py:exact` | 1 |  |" in lines and "| `model:rm` | 0.5 |  |" in lines
    assert str(tmp_path) not in text


@pytest.mark.slow
def test_overwrite_keeps_a_card_the_user_edited(tmp_path):
    """Issue 23 item 12: --overwrite deletes the run's own README.md, and keeps (and lists) one the user edited; the
    new run then leaves it as it is."""
    import copy
    import os
    import subprocess
    import sys

    from tests.helpers import TINY_RECIPE

    data = copy.deepcopy(TINY_RECIPE)
    data["trainer"].update(max_steps=2, save_steps=2)
    recipe, run = tmp_path / "r.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump({**data, "output_dir": str(run)}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def train(*flags):
        command = [sys.executable, "-m", "grpo_cli", "train", str(recipe), *flags]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    train()
    card = (run / "README.md").read_text()
    assert run_files.card_is_ours(run)  # the card as the run wrote it: --overwrite deletes it (below, fast)
    (run / "README.md").write_text(card + "\nMy notes on this run.\n")
    stderr = train("--overwrite")
    assert f"kept in {run}, not part of the run: README.md (edited since the run wrote it)" in stderr
    assert (
        f"warning: {run / 'README.md'} was edited by hand: left as it is, without this run's model card"
        in stderr
    )
    assert (run / "README.md").read_text() == card + "\nMy notes on this run.\n"
    assert (run / "checkpoint-2").is_dir() and (run / "summary.json").is_file()  # the run itself is whole


def test_overwrite_deletes_the_runs_own_card_and_keeps_an_edited_one(tmp_path):
    import hashlib

    from grpo_cli.run_dir import clear_previous_run, write_marker

    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "grpo")
    (run / "README.md").write_text("a user's notes, in a run that wrote no card\n")
    assert clear_previous_run(run) == ["README.md (edited since the run wrote it)"]
    write_marker(run, "grpo")
    run_files.record_card(run)  # the run wrote this card
    assert (
        json.loads((run / "run.json").read_text())["card_sha256"]
        == hashlib.sha256((run / "README.md").read_bytes()).hexdigest()
    )
    assert clear_previous_run(run) == [] and not (run / "README.md").exists()
    write_marker(run, "grpo")
    (run / "README.md").write_text("the card\n")
    run_files.record_card(run)
    (run / "README.md").write_text("the card, edited\n")
    assert clear_previous_run(run) == ["README.md (edited since the run wrote it)"]
    assert (run / "README.md").read_text() == "the card, edited\n"
    # A marker from before the card's hash was recorded: the card is the run's, as before.
    (run / "run.json").write_text('{"format": 1, "algorithm": "grpo"}')
    assert clear_previous_run(run) == [] and not (run / "README.md").exists()
