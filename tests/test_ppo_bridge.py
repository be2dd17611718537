"""The PPO reward bridge, driven through TRL's own `get_reward` with a tokenizer built in code."""

import os
import time

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl.experimental.ppo.ppo_trainer import truncate_response
from trl.experimental.utils import get_reward

from grpo_cli.algorithms.ppo_bridge import RewardFunctionModel, left_pad
from grpo_cli.errors import UserError

# "0" is token 0: get_reward overwrites pads with 0 in input_ids, so the bridge must tell them apart by the mask.
CHARS = list("0123456789+=? abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {char: i for i, char in enumerate(CHARS)}
    for special in ("<pad>", "<eos>", "<unk>"):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


ROWS = [
    {"prompt": "1+2=", "answer": "3", "level": 1},
    {"prompt": "what is 7+8? ", "answer": "15", "level": 2},
    {"prompt": "9=", "answer": "9", "level": 1},
]


def encode(tokenizer, texts):
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def queries_of(tokenizer, rows):
    return left_pad(encode(tokenizer, [row["prompt"] for row in rows]), tokenizer.pad_token_id)


class Recorder:
    """A score function: length of the completion, plus 10 when it is the answer; keeps every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions, columns):
        self.calls.append((prompts, completions, columns))
        return [
            len(c) + (10.0 if c == a else 0.0) for c, a in zip(completions, columns["answer"], strict=True)
        ]


def rollouts(tokenizer, queries, responses):
    """PPO's batch: left-padded queries, then responses truncated after EOS and right-padded with pad."""
    response_ids = encode(tokenizer, responses)
    width = max(len(ids) for ids in response_ids)
    padded = [ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in response_ids]
    truncated = truncate_response(tokenizer.eos_token_id, tokenizer.pad_token_id, torch.tensor(padded))
    return torch.cat((torch.tensor(queries), truncated), dim=1)


def test_each_rollout_is_scored_with_its_own_row(tokenizer):
    recorder = Recorder()
    queries = queries_of(tokenizer, ROWS)
    bridge = RewardFunctionModel(tokenizer, ROWS, queries, recorder)
    assert bridge.context_length == len("what is 7+8? ")

    order = [1, 0, 2, 0, 2]
    responses = ["15 ok<eos>", "3<eos>77", "nine", "4<eos>", "<eos>"]  # "nine": no EOS, fills the width
    batch = rollouts(tokenizer, [queries[i] for i in order], responses)
    logits, scores, _ = get_reward(bridge, batch, tokenizer.pad_token_id, bridge.context_length)

    assert len(recorder.calls) == 1
    prompts, completions, columns = recorder.calls[0]
    assert prompts == ["what is 7+8? ", "1+2=", "9=", "1+2=", "9="]
    assert completions == ["15 ok", "3", "nine", "4", ""]
    assert columns == {"answer": ["15", "3", "9", "3", "9"], "level": [2, 1, 1, 1, 1]}
    assert scores.tolist() == [5.0, 11.0, 4.0, 1.0, 0.0]
    assert scores.dtype == torch.float32
    assert logits.shape == (5, batch.shape[1], 1)


def test_conversational_prompts_get_message_completions(tokenizer):
    rows = [{"prompt": [{"role": "user", "content": "1+2="}], "answer": "3"}]
    recorder = Recorder()
    queries = left_pad(encode(tokenizer, ["user 1+2="]), tokenizer.pad_token_id)
    bridge = RewardFunctionModel(tokenizer, rows, queries, recorder)
    batch = rollouts(tokenizer, queries, ["34<eos>"])
    get_reward(bridge, batch, tokenizer.pad_token_id, bridge.context_length)
    prompts, completions, _ = recorder.calls[0]
    assert prompts == [rows[0]["prompt"]]
    assert completions == [[{"role": "assistant", "content": "34"}]]


def test_unknown_query_raises(tokenizer):
    queries = queries_of(tokenizer, ROWS)
    bridge = RewardFunctionModel(tokenizer, ROWS, queries, Recorder())
    stranger = left_pad(encode(tokenizer, ["2+2="]), tokenizer.pad_token_id, width=bridge.context_length)
    batch = rollouts(tokenizer, stranger, ["4<eos>"])
    with pytest.raises(KeyError, match=r"not in its dataset: '2\+2='"):
        get_reward(bridge, batch, tokenizer.pad_token_id, bridge.context_length)


def test_duplicate_prompts_must_agree_on_columns(tokenizer):
    same = [*ROWS, dict(ROWS[0])]
    bridge = RewardFunctionModel(tokenizer, same, queries_of(tokenizer, same), Recorder())
    assert bridge.backbone.row_index[tuple(queries_of(tokenizer, same)[3])] == 0

    conflicting = [*ROWS, {**ROWS[0], "answer": "4"}]
    with pytest.raises(
        UserError, match=r"'1\+2=' appears more than once \(rows 0 and 3\) with different answer"
    ):
        RewardFunctionModel(tokenizer, conflicting, queries_of(tokenizer, conflicting), Recorder())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"query_ids": [[1, 2], [1, 2, 3], [3]]}, "left-pad them all to one width"),
        ({"query_ids": [[1]]}, "3 rows but 1 queries"),
    ],
)
def test_construction_checks(tokenizer, change, message):
    kwargs = {"rows": ROWS, "query_ids": queries_of(tokenizer, ROWS), "score_fn": Recorder(), **change}
    with pytest.raises(ValueError, match=message):
        RewardFunctionModel(tokenizer, **kwargs)


def test_pad_must_differ_from_eos(tokenizer):
    same_pad = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, pad_token="<eos>", eos_token="<eos>"
    )
    with pytest.raises(UserError, match="must differ from EOS"):
        RewardFunctionModel(same_pad, ROWS, queries_of(tokenizer, ROWS), Recorder())


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_scores_must_be_finite(tokenizer, bad):
    queries = queries_of(tokenizer, ROWS)
    bridge = RewardFunctionModel(tokenizer, ROWS, queries, lambda p, c, cols: [bad] * len(c))
    with pytest.raises(ValueError, match="needs a finite score"):
        get_reward(bridge, rollouts(tokenizer, queries, ["1", "2", "3"]), tokenizer.pad_token_id, 13)


def test_moves_with_to_and_is_never_trained(tokenizer):
    queries = queries_of(tokenizer, ROWS)
    bridge = RewardFunctionModel(tokenizer, ROWS, queries, Recorder())
    assert not [p for p in bridge.parameters() if p.requires_grad]
    assert bridge.state_dict() == {}

    bridge.to(torch.float16).train()
    assert not bridge.training
    _, scores, _ = get_reward(bridge, rollouts(tokenizer, queries, ["3"] * 3), tokenizer.pad_token_id, 13)
    assert scores.dtype == torch.float32  # a half-precision bridge still reports exact float32 rewards

    bridge.to("meta")
    assert bridge.backbone.device_anchor.device.type == "meta"


@pytest.mark.slow
def test_drives_a_real_ppo_run(tokenizer, tmp_path):
    """PPOTrainer (LoRA policy, no ref model) trains on the bridge's scores, each rollout scored with its row."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    def config(**extra):
        return Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **extra,
        )

    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(config())
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    value_model = Qwen2ForSequenceClassification(config(num_labels=1))

    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(3) for b in range(3)]
    rows.append({"prompt": "what is 1+1? ", "answer": "2"})
    train_rows, eval_rows = rows[:8], rows[8:]
    queries = queries_of(tokenizer, rows)
    calls = []

    def score_fn(prompts, completions, columns):
        calls.append((prompts, completions, columns))
        return [float(len(c)) for c in completions]

    args = PPOConfig(
        output_dir=str(tmp_path),
        bf16=False,
        per_device_train_batch_size=4,
        local_rollout_forward_batch_size=4,
        total_episodes=8,
        response_length=5,
        stop_token="eos",
        num_ppo_epochs=1,
        num_sample_generations=0,
        per_device_eval_batch_size=2,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=RewardFunctionModel(tokenizer, rows, queries, score_fn),
        train_dataset=Dataset.from_dict({"input_ids": queries[:8]}),
        value_model=value_model,
        eval_dataset=Dataset.from_dict({"input_ids": queries[8:]}),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.generate_completions()

    answer_of = {row["prompt"]: row["answer"] for row in rows}
    for prompts, _, columns in calls:
        assert columns["answer"] == [answer_of[prompt] for prompt in prompts]
    train_calls, eval_calls = calls[:2], calls[2:]
    assert sorted(p for prompts, _, _ in train_calls for p in prompts) == sorted(
        r["prompt"] for r in train_rows
    )
    assert [prompts for prompts, _, _ in eval_calls] == [[r["prompt"] for r in eval_rows]]
    logged = [entry["objective/scores"] for entry in trainer.state.log_history]
    expected = [sum(map(len, completions)) / len(completions) for _, completions, _ in train_calls]
    assert logged == pytest.approx(expected)


# ---- the score function grpo-cli gives the bridge ----


def test_rollout_rewards_weigh_sum_and_log_each_reward():
    from grpo_cli.algorithms.ppo_bridge import RolloutRewards
    from grpo_cli.recipe import RewardEntry
    from grpo_cli.reward_binding import bind_all

    def shouting(completions, **_):
        return [None if c == "" else float(c.isupper()) for c in completions]

    def broken(completions, **_):
        raise RuntimeError("no")

    rewards = bind_all([RewardEntry(name="accuracy", weight=2.0), RewardEntry(name="closeness", weight=0.5)])
    for reward, fn, on_error in ((rewards[0], shouting, "skip"), (rewards[1], broken, "zero")):
        reward.name, reward.fn, reward.entry = (
            fn.__name__,
            fn,
            reward.entry.model_copy(update={"on_error": on_error}),
        )
    scorer = RolloutRewards(rewards)

    started = time.perf_counter()
    assert scorer(["p"] * 3, ["A", "b", ""], {}) == [2.0, 0.0, 0.0]
    assert scorer(["p"], ["C"], {}) == [2.0]
    spent = time.perf_counter() - started
    logs = {"objective/scores": 1.0}
    scorer.on_log(None, None, None, logs=logs)
    assert logs["rewards/shouting/mean"] == pytest.approx(
        2 / 3
    )  # None (skipped) scores are left out of the mean
    assert logs["rewards/broken/mean"] == 0.0 and logs["rewards/broken/errors"] == 4
    assert logs["rewards/shouting/errors"] == 0
    # Seconds too, for every reward, as GRPO runs log them: the time spent in it during the step (measured beside it
    # here: at most the time of both calls, however loaded the machine).
    assert 0 <= logs["rewards/shouting/seconds"] <= spent and 0 <= logs["rewards/broken/seconds"] <= spent

    with pytest.raises(UserError, match="reward 'broken' raised RuntimeError: no"):
        scorer.rewards[1].entry = scorer.rewards[1].entry.model_copy(update={"on_error": "fail"})
        RolloutRewards(scorer.rewards)(["p"], ["x"], {})


def test_rollout_rewards_log_completion_length_and_clipped_ratio_as_grpo_does():
    """GRPO's definitions: tokens up to and including EOS; the share that reached the length limit without EOS."""
    from types import SimpleNamespace

    from grpo_cli.algorithms.ppo_bridge import RolloutRewards
    from grpo_cli.recipe import RewardEntry
    from grpo_cli.reward_binding import bind_all
    from grpo_cli.run_files import rename_metrics

    rewards = bind_all([RewardEntry(name="accuracy")])
    rewards[0].name, rewards[0].fn = "one", lambda completions, **_: [1.0] * len(completions)
    scorer = RolloutRewards(rewards)
    args = SimpleNamespace(response_length=4, stop_token_id=None)
    scorer.on_train_begin(args, None, None, processing_class=SimpleNamespace(eos_token_id=9))
    # Reached the limit without EOS (clipped); ended at EOS; reached the limit with EOS as its last token; ended
    # at a pad before the limit (not clipped: it did not hit the limit).
    scorer(["p"] * 4, ["c"] * 4, {}, completion_ids=[[1, 2, 3, 4], [1, 9], [1, 2, 3, 9], [5]])
    scorer(["p"], ["c"], {}, completion_ids=[[6, 6, 6, 6]])  # a second batch of the same step: clipped
    scorer.unlogged(scorer)(["p"], ["c"], {}, completion_ids=[[1]])  # TRL's sample tables: not counted
    logs = {"objective/scores": 1.0}
    scorer.on_log(None, None, None, logs=logs)
    row = rename_metrics(logs)
    assert row["completion_length"] == (4 + 2 + 4 + 1 + 4) / 5
    assert row["clipped_ratio"] == 2 / 5

    # The recipe's stop_token_id ends a response too; each logged step counts its own rollouts.
    scorer.on_train_begin(
        SimpleNamespace(response_length=4, stop_token_id=6), None, None, processing_class=None
    )
    scorer(["p"] * 2, ["c"] * 2, {}, completion_ids=[[6, 6, 6, 6], [1, 2, 3, 4]])
    logs = {"objective/scores": 1.0}
    scorer.on_log(None, None, None, logs=logs)
    assert (logs["completions/mean_length"], logs["completions/clipped_ratio"]) == (4.0, 0.5)
