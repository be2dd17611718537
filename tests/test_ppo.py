"""PPO through the CLI: tiny end-to-end runs (reward functions, a reward model, a GRPO recipe switched to PPO,
resume), the errors for what PPO cannot take, and the pieces that turn recipe rewards into PPO scores."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import PPO_RECIPE


def output_of(recipe_path: Path) -> Path:
    return Path(yaml.safe_load(recipe_path.read_text())["output_dir"])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def lora_b_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"))
    found = {name: tensor for name, tensor in weights.items() if "lora_B" in name}
    assert found, f"no lora_B tensors in {path}"
    return found


def assert_adapter_trained(run: Path) -> None:
    # peft initialises every lora_B to zeros: each one that moved was trained.
    untouched = [name for name, tensor in lora_b_weights(run).items() if not tensor.abs().sum() > 0]
    assert not untouched, f"lora_B still zero after training: {untouched}"


def assert_value_model_trained(run: Path, checkpoint: str) -> None:
    from safetensors.torch import load_file

    base = load_file(str(run / "base_model" / "model.safetensors"))
    critic = load_file(str(run / checkpoint / "value_model" / "model.safetensors"))
    shared = [name for name in critic if name in base]
    assert shared and "score.weight" in critic
    assert any(not (critic[name] == base[name]).all() for name in shared), "the critic's backbone never moved"


def ok(result):
    assert result.exit_code == 0, result.output + (str(result.exception) if result.exception else "")
    return result


# ---- end to end ----


@pytest.mark.slow
def test_reward_functions_end_to_end(cli, ppo_recipe):
    from tests.helpers import phase_names

    path = ppo_recipe()
    result = ok(cli("train", path))
    run = output_of(path)
    assert phase_names(result.stderr) == [
        "importing TRL to check the trainer settings",
        "loading model qwen2 built from a config",
        "loading dataset addition (generated, 40 rows)",
        "preparing 32 prompts",
        "loading the value model (critic)",
        "setting up PPO",
    ]
    assert "===training policy===" not in result.stdout  # TRL's banner: the progress bar says as much

    assert_adapter_trained(run)
    assert_value_model_trained(run, "checkpoint-4")
    rows = metrics(run)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert {
            "reward",
            "kl",
            "entropy",
            "loss",
            "learning_rate",
            "rewards/accuracy",
            "rewards/closeness",
        } <= set(row)
        # PPO logs only the total; the per-reward means recorded beside it must add up to it with the weights.
        assert row["reward"] == pytest.approx(
            row["rewards/accuracy"] + 0.5 * row["rewards/closeness"], abs=1e-5
        )
        assert row["rewards/accuracy/errors"] == 0
        # Each reward's time in the step, as GRPO runs log it.
        assert 0 <= row["rewards/accuracy/seconds"] < 5 and 0 <= row["rewards/closeness/seconds"] < 5
        # Lengths, as GRPO runs log them: tokens up to and including EOS, at most response_length (2).
        assert 1 <= row["completion_length"] <= 2 and 0 <= row["clipped_ratio"] <= 1
    assert rows[0]["kl"] == pytest.approx(
        0, abs=1e-4
    )  # step 1 samples from the untrained policy = the reference
    assert rows[-1]["kl"] != pytest.approx(0, abs=1e-4)

    # The same layout as a GRPO run.
    for name in (
        "adapter_config.json",
        "tokenizer.json",
        "recipe.yaml",
        "summary.json",
        "base_model/config.json",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"] == "ppo" and summary["steps"] == 4
    assert summary["total_episodes"] == 4 * 8  # max_steps x prompts per step
    assert 0 < summary["trainable_parameters"] < summary["value_model_parameters"]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["algorithm"] == "ppo"


@pytest.mark.slow
def test_reward_model_mixed_with_a_function_end_to_end(cli, ppo_recipe, reward_model_dir):
    path = ppo_recipe(
        {"rewards": [{"name": f"model:{reward_model_dir}", "weight": 2.0}, {"name": "accuracy"}]}
    )
    ok(cli("train", path))
    run = output_of(path)

    assert_adapter_trained(run)
    rows = metrics(run)
    assert len(rows) == 4
    for row in rows:
        assert {"reward", "kl", "rewards/judge", "rewards/accuracy"} <= set(row)
        assert row["reward"] == pytest.approx(2.0 * row["rewards/judge"] + row["rewards/accuracy"], abs=1e-5)
        assert row["rewards/judge/errors"] == 0 and 0 < row["rewards/judge/seconds"] < 5
    assert (
        len({round(row["rewards/judge"], 6) for row in rows}) > 1
    )  # the model does score, differently per batch


@pytest.mark.slow
def test_a_reward_model_alone(cli, ppo_recipe, reward_model_dir):
    path = ppo_recipe({"rewards": [{"name": f"model:{reward_model_dir}"}], "trainer": {"max_steps": 2}})
    ok(cli("train", path))
    run = output_of(path)
    assert_adapter_trained(run)
    assert [row["reward"] for row in metrics(run)] == pytest.approx(
        [row["rewards/judge"] for row in metrics(run)]
    )


@pytest.mark.slow
def test_a_grpo_recipe_switched_to_ppo_by_override(cli, tmp_path):
    grpo = {**copy.deepcopy(PPO_RECIPE), "algorithm": "grpo", "output_dir": str(tmp_path / "run")}
    grpo["trainer"] = {
        "learning_rate": 0.05,
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "save_steps": 2,
    }
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(grpo))
    ok(cli("validate", path))  # a valid GRPO recipe as it stands

    ok(cli("train", path, "algorithm=ppo", "trainer.response_length=2", "trainer.num_ppo_epochs=1"))
    run = tmp_path / "run"
    assert_adapter_trained(run)
    assert [row["step"] for row in metrics(run)] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["algorithm"] == "ppo"


@pytest.mark.slow
def test_full_fine_tuning_without_lora(cli, ppo_recipe):
    from safetensors.torch import load_file

    path = ppo_recipe({"lora": None, "trainer": {"max_steps": 2, "learning_rate": 1e-3}})
    ok(cli("train", path))
    run = output_of(path)
    assert not (run / "adapter_config.json").exists()
    trained, base = (
        load_file(str(run / "model.safetensors")),
        load_file(str(run / "base_model" / "model.safetensors")),
    )
    assert trained.keys() == base.keys()
    assert [name for name in trained if (trained[name] == base[name]).all()] == []  # every weight moved
    assert metrics(run)[0]["kl"] == pytest.approx(0, abs=1e-4)  # the reference is the initial policy


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(cli, ppo_recipe):
    import shutil

    import torch

    path = ppo_recipe({"trainer": {"lr_scheduler_type": "linear"}})
    ok(cli("train", path))
    run = output_of(path)
    uninterrupted = metrics(run)

    # As if the run had stopped after step 2: its last checkpoint is checkpoint-2.
    shutil.rmtree(run / "checkpoint-4")
    resumed = ok(cli("train", path, "--resume"))
    assert "not TRL's random state or data order" in resumed.stderr  # said, as docs/ppo.md says it

    rows = metrics(run)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[:2] == uninterrupted[:2]  # kept as they were
    # The schedule continues at step 3 of 4 rather than restarting.
    assert [row["learning_rate"] for row in rows] == pytest.approx(
        [row["learning_rate"] for row in uninterrupted]
    )
    assert [row["episode"] for row in rows[2:]] == [24, 32]
    # The policy continues from the checkpoint's adapter: it already differs from the reference at step 3.
    assert rows[2]["kl"] != pytest.approx(0, abs=1e-4)
    # AdamW's state came back too: its step count at checkpoint-4 includes the updates before the interruption.
    updates_per_step = 2  # num_ppo_epochs x num_mini_batches x gradient_accumulation_steps
    state = torch.load(run / "checkpoint-4" / "optimizer.pt", weights_only=True)["state"]
    assert {float(s["step"]) for s in state.values()} == {4.0 * updates_per_step}
    assert (run / "checkpoint-4" / "value_model" / "config.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == "checkpoint-2" and summary["steps"] == 4

    ok(cli("train", path, "--resume"))  # from checkpoint-4: nothing left to do, nothing changed
    assert metrics(run) == rows


@pytest.mark.slow
def test_trl_sample_tables_on_held_out_prompts_stay_out_of_the_reward_means(cli, ppo_recipe):
    path = ppo_recipe({"trainer": {"num_sample_generations": 2, "per_device_eval_batch_size": 8}})
    ok(cli("train", path))
    for row in metrics(output_of(path)):
        assert row["reward"] == pytest.approx(
            row["rewards/accuracy"] + 0.5 * row["rewards/closeness"], abs=1e-5
        )


# ---- what PPO refuses, and says why ----


def error_of(result) -> str:
    assert result.exit_code == 2, result.output
    return result.stderr


def test_grpo_only_trainer_keys_are_errors_naming_them(cli, tiny_recipe):
    stderr = error_of(cli("validate", tiny_recipe(), "algorithm=ppo"))
    assert "trainer.num_generations: not a field of TRL's PPOConfig" in stderr
    assert "trainer.max_completion_length: not a field of TRL's PPOConfig" in stderr


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        (
            {"per_device_train_batch_size": 6, "num_mini_batches": 4},
            "trainer: per_device_train_batch_size (6) x gradient_accumulation_steps (1) = 6 prompts per process and "
            "step, which is not divisible by num_mini_batches (4); set num_mini_batches to one of [1, 2, 3, 6]",
        ),
        (
            {"whiten_rewards": True, "per_device_train_batch_size": 8, "num_mini_batches": 2},
            "trainer.whiten_rewards: needs at least 8 prompts per minibatch and process, got 8 / 2 = 4",
        ),
        ({"total_episodes": 64}, "trainer: give max_steps (4) or total_episodes (64), not both"),
        ({"mini_batch_size": 4}, "trainer.mini_batch_size: PPOTrainer computes it"),
        ({"num_mini_batches": 0}, "trainer.num_mini_batches: must be at least 1, got 0"),
        ({"stop_token": "eos", "stop_token_id": 1}, "trainer: give stop_token or stop_token_id, not both"),
    ],
)
def test_validate_catches_ppo_batch_shape_mistakes(cli, ppo_recipe, trainer, message):
    assert message in error_of(cli("validate", ppo_recipe({"trainer": trainer})))


def test_a_good_ppo_recipe_validates(cli, ppo_recipe):
    result = cli(
        "validate", ppo_recipe({"trainer": {"per_device_train_batch_size": 16, "num_mini_batches": 2}})
    )
    ok(result)
    assert "ok (ppo, 2 rewards)" in result.stdout


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rewards": []}, "rewards: PPO needs at least one reward"),
        ({"trainer": {"reward_model_path": "x"}}, "trainer.reward_model_path: TRL's PPOTrainer ignores it"),
        (
            {"trainer": {"per_device_train_batch_size": 64}},
            "dataset: 32 training rows, fewer than the 64 prompts one PPO step samples",
        ),
    ],
)
def test_train_refuses_before_training(cli, ppo_recipe, changes, message):
    path = ppo_recipe(changes)
    assert message in error_of(cli("train", path))
    assert not (output_of(path) / "metrics.jsonl").exists()


@pytest.mark.slow
def test_resume_without_a_saved_critic_is_refused(cli, ppo_recipe):
    import shutil

    path = ppo_recipe({"trainer": {"max_steps": 2}})
    ok(cli("train", path))
    shutil.rmtree(output_of(path) / "checkpoint-2" / "value_model")
    # Checked with the rest of the checkpoint's files before anything loads (issue 23 item 7).
    result = cli("train", path, "--resume", "trainer.max_steps=4")  # a finished run is not resumed: extend it
    assert "skipping checkpoint-2: value_model/ is missing" in result.stderr
    assert "the only checkpoint in" in error_of(
        result
    ) and "start the run again with --overwrite" in error_of(result)


# ---- the pieces ----


def test_max_steps_becomes_total_episodes(ppo_recipe, tmp_path):
    from grpo_cli.algorithms.ppo import config
    from grpo_cli.recipe import load_recipe

    args = config(load_recipe(ppo_recipe({"trainer": {"gradient_accumulation_steps": 2}})), tmp_path, 32)
    assert args.total_episodes == 4 * 8 * 2 and args.stop_token == "eos" and args.logging_steps == 1
    without_steps = load_recipe(
        ppo_recipe({"trainer": {"max_steps": -1, "num_train_epochs": 2}}, name="e.yaml")
    )
    assert config(without_steps, tmp_path, 32).total_episodes == 64
    own_stop = load_recipe(ppo_recipe({"trainer": {"stop_token_id": 5}}, name="s.yaml"))
    assert (config(own_stop, tmp_path, 32).stop_token, config(own_stop, tmp_path, 32).stop_token_id) == (
        None,
        5,
    )


@pytest.fixture
def saved_policy(tmp_path) -> Path:
    """A tiny causal LM and its tokenizer saved to a directory, as a model by path (or Hub id) is."""
    from grpo_cli.models import build_from_config
    from grpo_cli.recipe import FromConfig

    model, tokenizer = build_from_config(FromConfig(**PPO_RECIPE["model"]["from_config"]), seed=3)
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    return tmp_path / "policy"


@pytest.mark.slow
def test_a_saved_model_by_path(cli, ppo_recipe, saved_policy):
    path = ppo_recipe(
        {"model": {"from_config": None, "name_or_path": str(saved_policy)}, "trainer": {"max_steps": 2}}
    )
    ok(cli("train", path))
    run = output_of(path)
    assert_adapter_trained(run)
    assert not (run / "base_model").exists()  # the model has a home already
    assert (run / "checkpoint-2" / "value_model" / "model.safetensors").is_file()


@pytest.mark.parametrize("source", ["from_config", "name_or_path"])
def test_the_critic_starts_from_the_policys_weights_with_a_new_head(ppo_recipe, saved_policy, source):
    import torch

    from grpo_cli.algorithms.ppo import load_value_model
    from grpo_cli.models import load_model
    from grpo_cli.recipe import load_recipe

    model_section = (
        {"from_config": None, "name_or_path": str(saved_policy)} if source == "name_or_path" else {}
    )
    recipe = load_recipe(ppo_recipe({"model": model_section}))
    policy, tokenizer = load_model(recipe.model, recipe.seed)
    critic = load_value_model(recipe, policy, tokenizer, resume_from=None)

    assert critic.config.num_labels == 1 and critic.config.pad_token_id == tokenizer.pad_token_id
    weights, backbone = critic.state_dict(), policy.state_dict()
    assert set(weights) - set(backbone) == {"score.weight"}
    assert all(torch.equal(weights[name], backbone[name]) for name in weights if name != "score.weight")


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
)


def test_chat_prompts_are_tokenized_through_the_chat_template_with_the_generation_prompt():
    from grpo_cli.models import char_tokenizer
    from grpo_cli.prompting import tokenize_prompts

    tokenizer = char_tokenizer("0123456789+=")
    assert tokenize_prompts(tokenizer, ["1+2=", "10+3="]) == [
        tokenizer(t)["input_ids"] for t in ("1+2=", "10+3=")
    ]
    tokenizer.chat_template = CHAT_TEMPLATE
    chats = [[{"role": "user", "content": "1+2"}], [{"role": "user", "content": "10+3"}]]
    assert tokenize_prompts(tokenizer, chats) == [
        tokenizer("1+2=")["input_ids"],
        tokenizer("10+3=")["input_ids"],
    ]


@pytest.mark.slow
def test_chat_prompts_end_to_end(cli, ppo_recipe, saved_policy, reward_model_dir):
    from transformers import AutoTokenizer

    for directory in (saved_policy, reward_model_dir):
        tokenizer = AutoTokenizer.from_pretrained(directory)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(directory)
    path = ppo_recipe(
        {
            "model": {"from_config": None, "name_or_path": str(saved_policy)},
            "dataset": {"prompt": "{question}", "chat_template": True},
            "rewards": [{"name": "accuracy"}, {"name": f"model:{reward_model_dir}", "weight": 0.1}],
            "trainer": {"max_steps": 2},
        }
    )
    ok(cli("train", path))
    run = output_of(path)
    assert_adapter_trained(run)
    for row in metrics(run):
        assert row["reward"] == pytest.approx(row["rewards/accuracy"] + 0.1 * row["rewards/judge"], abs=1e-5)


@pytest.mark.slow
def test_the_same_recipe_and_seed_train_the_same_run(cli, ppo_recipe, tmp_path):
    """TRL 1.12's PPOTrainer shuffles minibatches with numpy, which it never seeds: two runs in one process (numpy's
    state moved on by the first) trained differently from the first step's value loss on."""
    from grpo_cli.run_files import read_metrics

    changes = {"trainer": {"num_mini_batches": 2, "max_steps": 3, "save_steps": 10}}
    timings = ("time", "eps")  # and each reward's `/seconds`: how fast, not what was trained
    runs = []
    for name in ("first.yaml", "second.yaml"):
        result = cli("train", ppo_recipe(changes, name=name))
        assert result.exit_code == 0, result.output
        runs.append(
            [
                {k: v for k, v in row.items() if k not in timings and not k.endswith("/seconds")}
                for row in read_metrics(tmp_path / "runs" / name[:-5])
            ]
        )
    assert len(runs[0]) == 3
    assert runs[0] == runs[1]
