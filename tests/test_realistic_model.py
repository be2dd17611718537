"""grpo-cli on a model shaped like the ones users bring (see tests/realistic_model.py): a byte-level BPE tokenizer
with a ChatML template, EOS `<|im_end|>` and a separate pad, a small Qwen2 and a reward model, all loaded from
directories through `model.name_or_path` and `model:<dir>`, trained on a chat dataset with a `messages` column;
and a reward model trained from the chat model on preference pairs in TRL's conversational format.

The training runs are slow (a few steps each); the tokenizer and reward-model checks are fast. Tests marked
`xfail(strict=True)` describe the correct behaviour of issue 14's defects that other branches fix: when the fix
lands they pass, strict xfail turns that into a failure, and the marker comes off. (Items 1 and 2, chat
completions and reward models in `rewards test` and eval, were fixed on main while these tests were written.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests import realistic_model
from tests.helpers import phase_names
from tests.realistic_model import DEFAULT_SYSTEM, ENDOFTEXT, IM_END

# Rewards in a file next to the recipe, written as the README says a chat reward is written.
CHAT_REWARDS = '''\
def answer_in_reply(completions, answer, **kwargs):
    """1.0 when the reply contains the row's answer; `c[-1]["content"]` fails unless completions are messages."""
    return [float(a in c[-1]["content"]) for c, a in zip(completions, answer)]


def chat_shape(prompts, completions, **kwargs):
    """1.0 when the prompt is the row's messages (system first) and the completion one assistant message."""
    return [
        float(
            isinstance(p, list)
            and p[0]["role"] == "system"
            and p[-1]["role"] == "user"
            and isinstance(c, list)
            and [m["role"] for m in c] == ["assistant"]
        )
        for p, c in zip(prompts, completions)
    ]


def rollout_lengths(completion_ids, log_metric, limit, stop_id, **kwargs):
    """Scores nothing; logs what completion_length and clipped_ratio must be for the responses it was given."""
    log_metric("expected/completion_length", sum(len(ids) for ids in completion_ids) / len(completion_ids))
    clipped = [len(ids) == limit and stop_id not in ids for ids in completion_ids]
    log_metric("expected/clipped_ratio", sum(clipped) / len(clipped))
    return [0.0] * len(completion_ids)
'''

REWARDS = [
    {"name": "accuracy"},
    {"name": "./chat_rewards.py:answer_in_reply"},
    {"name": "./chat_rewards.py:chat_shape"},
    {"name": "model:reward_model", "weight": 0.1},
]
WEIGHTS = {"accuracy": 1.0, "answer_in_reply": 1.0, "chat_shape": 1.0, "reward_model": 0.1}

GRPO = {
    "algorithm": "grpo",
    "seed": 0,
    "model": {"name_or_path": "policy"},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    # The test file as eval_split: the training split is then the file as it is, in its order (no shuffle).
    "dataset": {"source": "train.jsonl", "eval_split": "test.jsonl"},
    "rewards": REWARDS,
    "trainer": {
        "learning_rate": 0.01,
        "max_steps": 3,
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 12,
        "save_steps": 2,
    },
}
PPO = {
    **GRPO,
    "algorithm": "ppo",
    "trainer": {
        "learning_rate": 0.01,
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "response_length": 12,
        "num_ppo_epochs": 1,
        "save_steps": 2,
    },
}


@pytest.fixture(scope="module")
def realistic(tmp_path_factory) -> realistic_model.RealisticModel:
    """The policy, reward model and chat data, built once, with the reward file beside them."""
    directory = tmp_path_factory.mktemp("realistic")
    built = realistic_model.build(directory)
    (directory / "chat_rewards.py").write_text(CHAT_REWARDS)
    return built


def write_recipe(realistic, data: dict, name: str) -> Path:
    """A recipe in the model's directory (its relative paths resolve there), output under runs/NAME."""
    directory = realistic.policy.parent
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**data, "output_dir": str(directory / "runs" / name)}, sort_keys=False))
    return path


def invoke(*args):
    """`grpo-cli ARGS` in-process, wide enough that rich never wraps a table cell."""
    from grpo_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


def invoke_train(path: Path):
    """`grpo-cli train PATH` in-process, with what transformers logged at warning level collected as
    `result.transformers_warnings` (its logger does not propagate, so caplog sees none of it)."""
    import logging

    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        result = invoke("train", path)
    finally:
        logger.removeHandler(handler)
    result.transformers_warnings = [record.getMessage() for record in records]
    return result


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in `output`, as stripped cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if "│" in line
    ]


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def adapter(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


def assert_weighted_total(row: dict) -> None:
    expected = sum(weight * row[f"rewards/{name}"] for name, weight in WEIGHTS.items())
    assert row["reward"] == pytest.approx(expected, abs=1e-5)


# ---- the model itself (fast) ----


def test_tokenizer_loads_like_qwen25(realistic):
    tokenizer = realistic.tokenizer()
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token) == (
        IM_END,
        ENDOFTEXT,
        None,
        None,
    )
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "Ben has 12 + 7 = 19 pens.\n#### 19"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text)  # merges: fewer tokens than characters
    assert "Ġhas" in tokenizer.convert_ids_to_tokens(ids)  # byte-level: the space belongs to the next word


def test_chat_template_renders_chatml_with_a_default_system_message(realistic):
    tokenizer = realistic.tokenizer()
    user = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_model_config_and_generation_config_as_in_qwen25(realistic):
    from transformers import AutoConfig, GenerationConfig

    tokenizer = realistic.tokenizer()
    config = AutoConfig.from_pretrained(realistic.policy)
    generation = GenerationConfig.from_pretrained(realistic.policy)
    assert config.model_type == "qwen2" and config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id is None
    assert generation.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]


def test_loading_through_grpo_cli_pads_left_and_keeps_the_pad_token(realistic):
    from grpo_cli import models
    from grpo_cli.recipe import ModelSection

    model, tokenizer = models.load_model(ModelSection(name_or_path=str(realistic.policy)), seed=0)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == ENDOFTEXT  # not replaced: it has one
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 500_000


def test_reward_model_scores_the_chat_template_text(realistic):
    """A `model:` reward (PPO's bridge, eval and rewards test score with it) gives, for a chat prompt and its completion, the model's score of the templated text."""
    import torch

    from grpo_cli.reward_models import RewardModelScore

    rows = realistic_model.chat_rows(48, 10)  # the training file's rows
    prompts = [row["messages"][:-1] for row in rows[:3]]
    completions = [[{"role": "assistant", "content": text}] for text in ["#### 7", "It is 12.", "no idea"]]
    expected = realistic_model.reward_model_scores(
        realistic.reward_model, [p + c for p, c in zip(prompts, completions, strict=True)]
    )
    scores = RewardModelScore(str(realistic.reward_model), torch.float32, "cpu")(prompts, completions)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3  # the completions are told apart


def _policy_pair(realistic):
    """The policy twice: once with a generation_config.json that penalizes repeats hard (as Qwen2.5's 1.05 does,
    only more, so that it shows), once with one that sets only the special tokens."""
    from transformers import GenerationConfig

    from grpo_cli import models
    from grpo_cli.recipe import ModelSection

    spec = ModelSection(name_or_path=str(realistic.policy))
    penalized, tokenizer = models.load_model(spec, seed=0)
    plain, _ = models.load_model(spec, seed=0)
    penalized.generation_config.repetition_penalty = 5.0
    penalized.generation_config.no_repeat_ngram_size = 1
    ids = penalized.generation_config
    plain.generation_config = GenerationConfig(
        eos_token_id=ids.eos_token_id, pad_token_id=ids.pad_token_id, bos_token_id=ids.bos_token_id
    )
    rows = realistic_model.chat_rows(4, 10)
    prompts = data_tokenize(tokenizer, [row["messages"][:-1] for row in rows])
    return penalized.eval(), plain.eval(), tokenizer, prompts


def data_tokenize(tokenizer, prompts):
    from grpo_cli import prompting

    return prompting.tokenize_prompts(tokenizer, prompts)


def test_eval_decodes_greedily_without_the_models_sampling_settings(realistic):
    """transformers fills every generation setting left unset from the model's generation_config.json: eval's
    greedy decoding must not pick up a repetition penalty (Qwen2.5 ships 1.05) that training does not use."""
    import torch
    from transformers import GenerationConfig

    from grpo_cli import generation

    penalized, plain, tokenizer, prompts = _policy_pair(realistic)
    # The trap is real: a config that leaves repetition_penalty unset decodes differently on the two.
    naive = GenerationConfig(do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    query = torch.tensor([prompts[0]])
    with torch.inference_mode():
        differ = [
            m.generate(input_ids=query, generation_config=naive)[0].tolist() for m in (penalized, plain)
        ]
    assert differ[0] != differ[1]

    sampling = generation.Sampling(num_samples=1, max_new_tokens=12, seed=0)
    outputs = [generation.generate(m, tokenizer, prompts, sampling, batch_size=2) for m in (penalized, plain)]
    assert [[s.token_ids for s in group] for group in outputs[0]] == [
        [s.token_ids for s in group] for group in outputs[1]
    ]
    # Sampling (K > 1) too: the recipe's settings, nothing from the model's file.
    sampling = generation.Sampling(num_samples=2, max_new_tokens=12, seed=0, temperature=0.9)
    outputs = [generation.generate(m, tokenizer, prompts, sampling, batch_size=4) for m in (penalized, plain)]
    assert [[s.token_ids for s in group] for group in outputs[0]] == [
        [s.token_ids for s in group] for group in outputs[1]
    ]


def test_ppo_rollouts_sample_without_the_models_sampling_settings(realistic):
    """TRL's PPOTrainer samples with a GenerationConfig of its own that leaves repetition_penalty (and more) unset;
    `ppo_compat.sample_as_configured` keeps the policy's generation_config.json out of its rollouts."""
    import warnings
    from types import SimpleNamespace

    import torch
    from transformers import GenerationConfig
    from trl.experimental.ppo.ppo_trainer import generate as trl_generate

    from grpo_cli.algorithms import ppo_compat
    from grpo_cli.algorithms.ppo_bridge import left_pad

    penalized, plain, tokenizer, prompts = _policy_pair(realistic)
    queries = torch.tensor(left_pad(prompts, tokenizer.pad_token_id))
    # What PPOTrainer.train builds (trl/experimental/ppo/ppo_trainer.py), with PPOConfig's temperature.
    config = GenerationConfig(max_new_tokens=12, temperature=0.7 + 1e-7, top_k=0.0, top_p=1.0, do_sample=True)

    def rollouts(model):
        torch.manual_seed(0)
        with torch.inference_mode():
            responses, logits = trl_generate(model, queries, tokenizer.pad_token_id, config)
        return responses.tolist(), logits

    before = rollouts(penalized)
    for model in (penalized, plain):
        ppo_compat.sample_as_configured(SimpleNamespace(policy_model=model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (penalized_ids, penalized_logits), (plain_ids, plain_logits) = rollouts(penalized), rollouts(plain)
    assert before[0] != plain_ids  # without it, the penalty changed what was sampled
    assert penalized_ids == plain_ids
    assert torch.equal(penalized_logits, plain_logits)  # the logits TRL keeps: no penalty applied either
    assert penalized.generation_config.repetition_penalty == 5.0  # the model's own config is left as it was


def test_a_local_eval_split_resolves_against_the_recipe(realistic, tmp_path, monkeypatch):
    from grpo_cli.recipe import load_recipe

    monkeypatch.chdir(tmp_path)  # anywhere but the recipe's directory
    recipe = load_recipe(write_recipe(realistic, GRPO, "paths"))
    assert recipe.dataset.eval_split == str(realistic.eval_data)
    assert recipe.dataset.source == str(realistic.train_data)


# ---- GRPO with LoRA on the chat dataset ----


@pytest.fixture(scope="module")
def grpo_run(realistic):
    path = write_recipe(realistic, GRPO, "grpo")
    result = invoke_train(path)
    return path, realistic.policy.parent / "runs" / "grpo", result


@pytest.mark.slow
def test_grpo_start_says_each_step_and_nothing_else(grpo_run, realistic):
    _, _, result = grpo_run
    assert phase_names(result.stderr) == [
        "importing TRL to check the trainer settings",
        f"loading model {realistic.policy}",
        f"loading dataset {realistic.train_data}",
        "preparing 48 prompts",
        f"loading reward model {realistic.reward_model}",
        "setting up GRPO",
    ]
    # config.json has no pad id while the tokenizer has one, as in Qwen2.5: no "new PAD/BOS/EOS tokens" warning.
    assert result.transformers_warnings == []
    assert "warning:" not in result.stderr  # the tokenizer has a chat template: the messages stay messages


@pytest.mark.slow
def test_grpo_trains_every_adapter_weight(grpo_run):
    _, run, result = grpo_run
    assert "done: 3 steps" in result.stdout
    final, halfway = adapter(run), adapter(run / "checkpoint-2")
    assert final.keys() == halfway.keys() and len(final) > 0
    for name, tensor in final.items():
        assert not tensor.eq(halfway[name]).all(), f"{name} did not change between step 2 and step 3"
    assert (
        run / "chat_template.jinja"
    ).read_text() == realistic_model.CHAT_TEMPLATE  # the run can serve chat


@pytest.mark.slow
def test_grpo_metrics_with_chat_rewards_and_a_reward_model(grpo_run):
    _, run, _ = grpo_run
    rows = metric_rows(run)
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        for key in ["loss", "learning_rate", "completion_length", "clipped_ratio", "time"]:  # beta 0: no kl
            assert key in row, key
        assert_weighted_total(row)
        # Prompts reach the rewards as the row's messages, completions as one assistant message: the README's
        # `c[-1]["content"]` works (answer_in_reply would have raised on a string).
        assert row["rewards/chat_shape"] == 1.0
        assert row["rewards/reward_model"] != 0.0
        assert 1 <= row["completion_length"] <= 12
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["algorithm"] == "grpo"


@pytest.mark.slow
def test_grpo_logs_errors_and_seconds_for_the_reward_model(grpo_run):
    _, run, _ = grpo_run
    for row in metric_rows(run):
        assert row["rewards/reward_model/errors"] == 0
        assert row["rewards/reward_model/seconds"] > 0


# ---- eval of the GRPO run ----


@pytest.fixture(scope="module")
def evaluated(grpo_run):
    path, run, _ = grpo_run
    result = invoke("eval", path, "--adapter", run)
    eval_json = json.loads((run / "eval" / "eval.json").read_text())
    samples = [json.loads(line) for line in (run / "eval" / "eval_samples.jsonl").read_text().splitlines()]
    return eval_json, samples, result


@pytest.mark.slow
def test_eval_says_what_it_loads_and_decodes_greedily_without_warnings(evaluated, grpo_run, realistic):
    _, run, _ = grpo_run
    *_, result = evaluated
    assert phase_names(result.stderr)[-3:] == [
        "importing torch and transformers",
        f"loading the tuned model (adapter {run} on {realistic.policy})",
        "preparing 6 prompts",
    ]
    # The policy's generation_config.json samples (temperature 0.7, top_p 0.8, top_k 20): greedy decoding that
    # left them unset would have transformers warn that they are not valid.
    assert "generation flags are not valid" not in result.stderr


@pytest.mark.slow
def test_eval_uses_the_chat_prompts_and_hands_rewards_messages(evaluated, realistic):
    eval_json, samples, _ = evaluated
    held_out = [json.loads(line) for line in realistic.eval_data.read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [row["messages"][:-1] for row in held_out]
    metrics = eval_json["metrics"]["tuned"]
    assert metrics["rewards/chat_shape"] == 1.0
    for sample, row in zip(samples, held_out, strict=True):
        assert sample["rewards"]["accuracy"] == float(row["answer"] in sample["completion"].split("####")[-1])
        assert sample["completion_length"] <= 12


@pytest.mark.slow
def test_eval_scores_the_reward_model_as_training_does(evaluated, realistic):
    eval_json, samples, _ = evaluated
    expected = realistic_model.reward_model_scores(
        realistic.reward_model,
        [s["prompt"] + [{"role": "assistant", "content": s["completion"]}] for s in samples],
    )
    assert [s["rewards"]["reward_model"] for s in samples] == pytest.approx(expected, abs=1e-4)
    mean = sum(expected) / len(expected)
    assert eval_json["metrics"]["tuned"]["rewards/reward_model"] == pytest.approx(mean, abs=1e-4)


# ---- rewards test --recipe on the chat dataset ----


def train_row(index: int) -> dict:
    return realistic_model.chat_rows(48, 10)[index]


@pytest.mark.slow
def test_rewards_test_scores_a_builtin_against_a_chat_row(grpo_run):
    path, _, _ = grpo_run
    answer = train_row(3)["answer"]
    result = invoke(
        "rewards",
        "test",
        "--recipe",
        path,
        "-r",
        "accuracy",
        "--row",
        3,
        "-c",
        f"#### {answer}",
        "-c",
        "#### 0",
    )
    assert table_rows(result.stdout) == [
        [repr(f"#### {answer}"), "1", "1", "+0.707"],
        ["'#### 0'", "0", "0", "-0.707"],
    ]
    question = train_row(3)["messages"][1]["content"]
    assert question[:25] in " ".join(
        result.stdout.split()
    )  # the row's question is the prompt (rich wraps it)


@pytest.mark.slow
def test_rewards_test_hands_chat_rewards_messages_as_training_does(grpo_run, realistic):
    path, _, _ = grpo_run
    answer = train_row(0)["answer"]
    result = invoke(
        "rewards",
        "test",
        "--recipe",
        path,
        "-r",
        f"{realistic.policy.parent}/chat_rewards.py:answer_in_reply",  # -r paths are relative to the cwd
        "-r",
        f"{realistic.policy.parent}/chat_rewards.py:chat_shape",
        "--row",
        0,
        "-c",
        f"It is {answer}.",
        "-c",
        "I do not know.",
    )
    assert [row[:4] for row in table_rows(result.stdout)] == [
        [repr(f"It is {answer}."), "1", "1", "2"],
        ["'I do not know.'", "0", "1", "1"],
    ]


@pytest.mark.slow
def test_rewards_test_scores_the_reward_model_on_the_templated_chat(grpo_run, realistic):
    path, _, _ = grpo_run
    completions = ["#### 7", "It is 12."]
    result = invoke(
        "rewards",
        "test",
        "--recipe",
        path,
        "-r",
        f"model:{realistic.reward_model}",  # -r paths are relative to the cwd
        "--row",
        1,
        *[arg for c in completions for arg in ("-c", c)],
    )
    expected = realistic_model.reward_model_scores(
        realistic.reward_model,
        [[*train_row(1)["messages"][:-1], {"role": "assistant", "content": c}] for c in completions],
    )
    scores = [float(row[1]) for row in table_rows(result.stdout)]
    assert scores == pytest.approx(expected, rel=1e-4)  # the table shows 6 significant digits


# ---- PPO with LoRA on the chat dataset ----


@pytest.fixture(scope="module")
def ppo_run(realistic):
    # One more reward, weighted 0, that logs the expected lengths of the very responses PPO scored.
    lengths = {
        "name": "./chat_rewards.py:rollout_lengths",
        "weight": 0.0,
        "args": {"limit": PPO["trainer"]["response_length"], "stop_id": realistic.tokenizer().eos_token_id},
    }
    path = write_recipe(realistic, {**PPO, "rewards": [*REWARDS, lengths]}, "ppo")
    result = invoke_train(path)
    return path, realistic.policy.parent / "runs" / "ppo", result


@pytest.mark.slow
def test_ppo_trains_the_adapter_and_the_critic(ppo_run, realistic):
    from safetensors.torch import load_file

    _, run, result = ppo_run
    assert "done: 2 steps" in result.stdout
    lora_b = {name: t for name, t in adapter(run).items() if "lora_B" in name}
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b.values())  # peft starts every lora_B at zero
    policy = load_file(realistic.policy / "model.safetensors")
    critic = load_file(run / "checkpoint-2" / "value_model" / "model.safetensors")
    shared = [name for name in critic if name in policy]
    assert shared and "score.weight" in critic  # the critic starts from the policy's own weights
    assert any(not critic[name].eq(policy[name]).all() for name in shared)


@pytest.mark.slow
def test_ppo_start_says_each_step_and_nothing_else(ppo_run, realistic):
    _, _, result = ppo_run
    assert phase_names(result.stderr) == [
        "importing TRL to check the trainer settings",
        f"loading model {realistic.policy}",
        f"loading dataset {realistic.train_data}",
        "preparing 48 prompts",
        f"loading reward model {realistic.reward_model}",
        "loading the value model (critic)",
        "setting up PPO",
    ]
    # Neither TRL's banner nor transformers' "Passing `generation_config` together with ..." at the first rollout.
    assert "===training policy===" not in result.stdout
    assert result.transformers_warnings == []


@pytest.mark.slow
def test_ppo_metrics_with_chat_rewards_and_a_reward_model(ppo_run):
    _, run, _ = ppo_run
    rows = metric_rows(run)
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        for key in ["loss", "kl", "entropy", "learning_rate", "time"]:
            assert key in row, key
        assert_weighted_total(row)
        assert row["rewards/chat_shape"] == 1.0  # the bridge hands chat rewards messages too
        assert row["rewards/reward_model/errors"] == 0


@pytest.mark.slow
def test_ppo_logs_completion_length_and_clipped_ratio_as_grpo_does(ppo_run):
    _, run, _ = ppo_run
    for row in metric_rows(run):
        assert 1 <= row["completion_length"] <= 12
        assert row["completion_length"] == row["expected/completion_length"]
        assert row["clipped_ratio"] == row["expected/clipped_ratio"]
        # TRL counts the responses with EOS (a response holds at most one): none of them is clipped.
        assert row["clipped_ratio"] <= 1 - row["val/num_eos_tokens"] / 8


@pytest.mark.slow
def test_ppo_logs_seconds_for_every_reward(ppo_run):
    _, run, _ = ppo_run
    for row in metric_rows(run):
        for name in WEIGHTS:
            assert row[f"rewards/{name}/seconds"] > 0


# ---- a reward model trained on chat preference pairs (TRL's conversational format) ----


def chat_preferences(count: int, seed: int) -> list[dict]:
    """Pairs in TRL's conversational preference format: `prompt` messages (every other row with a system
    message; the rest get the template's default), `chosen` and `rejected` one assistant message each. A tiny model
    learns them in a few steps: the chosen answer is the worked sum ending in `#### N`, the rejected one a wrong
    number without the marker."""
    import random

    rng = random.Random(seed)
    rows = []
    for index in range(count):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question, worked = realistic_model.word_problem(a, b, rng)
        prompt = [{"role": "user", "content": question}]
        if index % 2 == 0:
            prompt = [{"role": "system", "content": realistic_model.SYSTEM_PROMPT}, *prompt]
        wrong = a + b + rng.choice([-7, 5, 10])
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": worked}],
                "rejected": [{"role": "assistant", "content": f"I think it is {wrong}."}],
            }
        )
    return rows


def text_answers(row: dict) -> dict:
    """A conversational pair with its answers as text: the shape of most preference data."""
    return {**row, "chosen": row["chosen"][0]["content"], "rejected": row["rejected"][0]["content"]}


def question_and_text_answers(row: dict) -> dict:
    """A conversational pair as plain columns, for `dataset.prompt: "{question}"` (its system message dropped)."""
    return {
        "question": row["prompt"][-1]["content"],
        **text_answers({k: row[k] for k in ("chosen", "rejected")}),
    }


# The shapes preference data comes in: each conversational pair as that shape has it, and the dataset settings that
# read it. A chat tokenizer makes each a chat pair, as GRPO and PPO make every prompt a chat prompt.
PAIR_SHAPES = {
    "conversational": (lambda row: row, {}),
    "text-answers": (text_answers, {}),
    "prompt-template": (question_and_text_answers, {"prompt": "{question}"}),
}

REWARD = {
    "algorithm": "reward",
    "seed": 0,
    "model": {"name_or_path": "policy"},  # the chat model under a fresh score head
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    "dataset": {"source": "preferences.jsonl", "eval_size": 16},
    "trainer": {"learning_rate": 0.01, "max_steps": 8, "per_device_train_batch_size": 8, "save_steps": 4},
}


@pytest.fixture(scope="module", params=list(PAIR_SHAPES))
def chat_reward_run(realistic, request):
    """A reward run on 64 pairs (16 held out) of one shape: (recipe, run directory, `train`'s result)."""
    reshape, dataset = PAIR_SHAPES[request.param]
    source = (
        "preferences.jsonl" if request.param == "conversational" else f"preferences-{request.param}.jsonl"
    )
    realistic_model.write_jsonl(
        realistic.policy.parent / source, [reshape(r) for r in chat_preferences(64, 30)]
    )
    name = "chat_reward" if request.param == "conversational" else f"chat_reward-{request.param}"
    recipe = {**REWARD, "dataset": {**REWARD["dataset"], "source": source, **dataset}}
    path = write_recipe(realistic, recipe, name)
    result = invoke_train(path)
    return path, realistic.policy.parent / "runs" / name, result


@pytest.mark.slow
def test_chat_reward_run_says_each_step_and_learns_its_pairs(chat_reward_run, realistic):
    path, run, result = chat_reward_run
    source = yaml.safe_load(path.read_text())["dataset"]["source"]
    assert "done: 8 steps" in result.stdout
    assert phase_names(result.stderr) == [
        "importing TRL to check the trainer settings",
        f"loading reward model {realistic.policy}",
        f"loading dataset {realistic.policy.parent / source}",
        "preparing 48 preference pairs",
        "setting up reward modelling",
    ]
    assert "warning:" not in result.stderr and result.transformers_warnings == []
    rows = metric_rows(run)
    assert [row["step"] for row in rows] == list(range(1, 9))
    assert all({"loss", "pairwise_accuracy", "margin"} <= set(row) for row in rows)
    assert sum(row["loss"] for row in rows[-3:]) < 0.5 * sum(row["loss"] for row in rows[:3])
    # The score head is trained in full and saved beside the adapter (peft's modules_to_save).
    heads = {name: t for name, t in adapter(run).items() if ".score." in name}
    assert [tuple(t.shape) for t in heads.values()] == [(1, 96)]
    # peft's own names for a classifier head, once each (grpo-cli's own ["score"] once had them appended).
    assert json.loads((run / "adapter_config.json").read_text())["modules_to_save"] == ["classifier", "score"]


@pytest.mark.parametrize("shape", list(PAIR_SHAPES))
def test_pairs_are_plain_text_on_both_sides_with_chat_template_false(realistic, shape):
    """With dataset.chat_template: false a chat tokenizer's template is left out of reward training as GRPO and PPO
    leave it out of their prompts: the pair is trained as prompt text + answer text, which is what the `model:`
    reward reads for the text prompt and text reply they then give it."""
    import torch
    from datasets import Dataset

    from grpo_cli import prompting
    from grpo_cli.recipe import DatasetSection
    from grpo_cli.reward_models import RewardModelScore, tokenize_pairs

    reshape, dataset = PAIR_SHAPES[shape]
    raw = Dataset.from_list([reshape(r) for r in chat_preferences(4, 30)])
    spec = DatasetSection(source="preferences.jsonl", chat_template=False, **dataset)
    tokenizer = realistic.tokenizer()
    prepared = prompting.prepare_preferences(raw, spec, tokenizer)
    assert all(isinstance(row[side], str) for row in prepared for side in ("prompt", "chosen", "rejected"))
    pairs = tokenize_pairs(prepared, tokenizer)

    prompts = prompting.prepare(raw, spec, tokenizer)["prompt"]  # GRPO's and PPO's prompts: text
    reward = RewardModelScore(str(realistic.reward_model), torch.float32, "cpu")
    for side in ("chosen", "rejected"):
        replies = [a if isinstance(a, str) else a[0]["content"] for a in raw[side]]
        texts = reward.texts(prompts, replies)
        assert reward.tokenizer(text=texts, add_special_tokens=False)["input_ids"] == pairs[f"{side}_ids"]
        assert [tokenizer.decode(ids) for ids in pairs[f"{side}_ids"]] == texts
        assert not any(IM_END in text for text in texts)


@pytest.fixture(scope="module")
def chat_reward_eval(chat_reward_run):
    from grpo_cli.recipe import load_recipe
    from grpo_cli.workflows import evaluate_pairs

    _, run, _ = chat_reward_run
    return evaluate_pairs.run(load_recipe(run / "recipe.yaml"), adapter=run, baseline=True)


@pytest.mark.slow
def test_chat_reward_run_ranks_held_out_pairs_better_than_its_start(chat_reward_eval):
    result = chat_reward_eval
    assert result.settings["num_prompts"] == 16
    tuned, base = result.metrics["tuned"], result.metrics["base"]
    assert tuned["pairwise_accuracy"] == 1.0 and tuned["margin"] > 1.0
    assert tuned["pairwise_accuracy"] > base["pairwise_accuracy"] and tuned["margin"] > base["margin"]
    # chat pairs, whatever the data's shape
    assert all(isinstance(row["chosen"], list) for row in result.rows)


@pytest.mark.slow
def test_chat_pairs_are_trained_on_the_text_rl_scores(chat_reward_run, chat_reward_eval, realistic):
    """The conversation a reward run trains on is the one GRPO and PPO score, whatever shape the pairs come in:
    `RewardModelScore` (the `model:` reward, loaded from the run as they load it), given the prompt they build
    from the row and the reply as TRL hands it over, reads the same token ids as `tokenize_pairs` gives the
    trainer, the chat template's rendering of prompt + answer, and gives the score the model had in training (its
    adapter unmerged, on TRL's collated batch) and in `eval`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from grpo_cli import models, prompting
    from grpo_cli.recipe import load_recipe
    from grpo_cli.reward_models import RewardModelScore, tokenize_pairs
    from grpo_cli.workflows.evaluate_generations import held_out_rows

    _, run, _ = chat_reward_run
    recipe = load_recipe(run / "recipe.yaml")
    tokenizer = models.policy_tokenizer(recipe.model)  # the tokenizer train loads
    raw = held_out_rows(recipe, None)  # the held-out pairs as the data has them, in eval's order
    # What GRPO and PPO score: the prompt they build from the row, and the reply as one assistant message.
    prompts = prompting.prepare(raw, recipe.dataset, tokenizer)["prompt"]
    chosen = [
        [{"role": "assistant", "content": c if isinstance(c, str) else c[0]["content"]}]
        for c in raw["chosen"]
    ]
    # with and without a system message, where the data has one
    assert {len(p) for p in prompts} == ({1} if recipe.dataset.prompt else {1, 2})

    # The pairs as train tokenizes them.
    pairs = tokenize_pairs(prompting.prepare_preferences(raw, recipe.dataset, tokenizer), tokenizer)
    reward = RewardModelScore(str(run), torch.float32, "cpu")
    scored = reward.tokenizer(text=reward.texts(prompts, chosen), add_special_tokens=False)["input_ids"]
    assert scored == pairs["chosen_ids"]
    rendered = [
        reward.tokenizer.apply_chat_template(p + c, tokenize=False)
        for p, c in zip(prompts, chosen, strict=True)
    ]
    assert [tokenizer.decode(ids) for ids in pairs["chosen_ids"]] == rendered
    lone = next(i for i, p in enumerate(prompts) if len(p) == 1)  # the template adds its system message
    assert rendered[lone] == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}{IM_END}\n<|im_start|>user\n{prompts[lone][0]['content']}{IM_END}\n"
        f"<|im_start|>assistant\n{chosen[lone][0]['content']}{IM_END}\n"
    )

    # The model as the trainer held it: the policy under the adapter and its trained score head, not merged.
    base = AutoModelForSequenceClassification.from_pretrained(realistic.policy, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    as_trained = PeftModel.from_pretrained(base, str(run)).eval()
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(list(pairs))
    with torch.inference_mode():
        logits = as_trained(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    in_training = logits[: len(raw), 0].tolist()  # the batch is the chosen answers, then the rejected ones

    rl_scores = reward(prompts, chosen)
    assert rl_scores == pytest.approx(in_training, abs=1e-4)
    assert rl_scores == pytest.approx([c for c, _r in chat_reward_eval.samples["tuned"]], abs=1e-5)
