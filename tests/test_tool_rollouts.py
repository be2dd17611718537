"""The tool loop outside training (`grpo_cli.tool_loop`): eval, generate and rewards test run the model through the
loop TRL's GRPOTrainer runs in training. A scripted model (its `generate` reads the prompt and answers a question
with a known tool call, then, after the tool's result, with "The answer is <result>") goes through it; the
transcript, what the tool received and the counts are asserted exactly, and against TRL's own loop."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from tests.helpers import tool_bpe_model, write

CALC = '''
import json


def add(a: int, b: int, log: str = "") -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
        log: Set by the recipe, hidden from the model.
    """
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"a": a, "b": b}) + "\\n")
    return a + b


def broken(a: int, b: int) -> int:
    """Add, badly.

    Args:
        a: The first.
        b: The second.
    """
    raise RuntimeError("no adding today")


def transcript_reward(prompts, completions, answer, completion_ids, log="", **kwargs):
    if log:
        with open(log, "a") as f:
            for p, c, ids in zip(prompts, completions, completion_ids):
                f.write(json.dumps({"prompt": p, "completion": c, "ids": list(ids)}) + "\\n")
    return [float(c[-1]["content"] == f"The answer is {a}") for c, a in zip(completions, answer)]
'''


def reply(text: str, tool: str | None = "add") -> str:
    """The scripted model's next turn for a rendered prompt: the answer once a tool result is in it, else a call
    (none when the prompt renders no tools: then a guess)."""
    results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S)
    if results:
        return f"The answer is {results[-1]}<|im_end|>"
    if tool is None or "<tools>" not in text:
        return "The answer is 0<|im_end|>"
    a, b = re.findall(r"Add (\d+) and (\d+)", text)[-1]
    return f"<tool_call>\n{json.dumps({'name': tool, 'arguments': {'a': int(a), 'b': int(b)}})}\n</tool_call><|im_end|>"


def scripted_generate(tokenizer, tool: str = "add"):
    """A model's `generate` (left-padded batch in, prompt + reply out) that answers with `reply`."""
    import torch

    def generate(input_ids, attention_mask, generation_config=None, **kwargs):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
            rows.append(tokenizer.encode(reply(text, tool), add_special_tokens=False))
        width = max(map(len, rows))
        padded = [r + [tokenizer.eos_token_id] * (width - len(r)) for r in rows]
        return torch.cat([input_ids, torch.tensor(padded)], 1)

    return generate


@pytest.fixture(scope="module")
def tokenizer():
    from grpo_cli import tool_calls
    from tests import realistic_model

    tok = realistic_model.build_tokenizer()
    tok.model_max_length = 2048
    assert tool_calls.prepare_tokenizer(tok, "qwen2_5") == []
    return tok


def scripted_model(tokenizer, tool="add", max_positions=2048):
    return SimpleNamespace(
        config=SimpleNamespace(max_position_embeddings=max_positions),
        generation_config=None,
        device="cpu",
        eval=lambda: None,
        generate=scripted_generate(tokenizer, tool),
    )


def toolbox(tmp_path, monkeypatch, tool="add", args=None):
    from grpo_cli import tool_binding, tool_calls
    from grpo_cli.recipe import Recipe

    write(tmp_path / "calc.py", CALC)
    monkeypatch.chdir(tmp_path)
    recipe = Recipe.model_validate(
        {
            "model": {"name_or_path": "m"},
            "dataset": {"source": "d.jsonl"},
            "tools": [{"name": f"./calc.py:{tool}", "args": args or {}}],
            "rewards": [{"name": "accuracy"}],
        }
    )
    return tool_calls.toolbox(tool_binding.bind_all(recipe))


ROWS = [
    {"prompt": [{"role": "user", "content": "Add 2 and 3."}], "answer": 5},
    {"prompt": [{"role": "user", "content": "Add 40 and 2."}], "answer": 42},
]


def call(a, b, tool="add"):
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": tool, "arguments": {"a": a, "b": b}}}],
    }


def run(tokenizer, box, max_iterations=None, num_samples=1, max_new_tokens=256, model=None):
    from grpo_cli import tool_loop
    from grpo_cli.generation import Sampling

    sampling = Sampling(num_samples=num_samples, max_new_tokens=max_new_tokens, seed=0)
    return tool_loop.rollouts(
        model or scripted_model(tokenizer), tokenizer, ROWS, box, sampling, max_iterations=max_iterations
    )


def test_a_rollout_calls_the_tool_and_answers(tokenizer, tmp_path, monkeypatch):
    from grpo_cli import tool_loop

    box = toolbox(tmp_path, monkeypatch, args={"log": str(tmp_path / "calls.jsonl")})
    samples = run(tokenizer, box)
    received = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert received == [{"a": 2, "b": 3}, {"a": 40, "b": 2}]
    assert [s.messages for g in samples for s in g] == [
        [
            call(2, 3),
            {"role": "tool", "name": "add", "content": "5"},
            {"role": "assistant", "content": "The answer is 5"},
        ],
        [
            call(40, 2),
            {"role": "tool", "name": "add", "content": "42"},
            {"role": "assistant", "content": "The answer is 42"},
        ],
    ]
    (first,), _ = samples
    assert (first.tool_calls, first.tool_failures, first.turns, first.clipped) == (1, 0, 2, False)
    assert first.prompt == ROWS[0]["prompt"]
    # The completion's tokens: the call, the tool result (not the model's), the answer, as TRL concatenates them.
    call_ids = tokenizer.encode(reply("<tools> Add 2 and 3."), add_special_tokens=False)
    answer_ids = tokenizer.encode("The answer is 5<|im_end|>", add_special_tokens=False)
    assert first.token_ids[: len(call_ids)] == call_ids and first.token_ids[-len(answer_ids) :] == answer_ids
    assert first.length == len(call_ids) + len(answer_ids)
    assert "<tool_response>\n5\n</tool_response>" in tokenizer.decode(first.token_ids)
    assert tool_loop.tool_metrics(samples) == {
        "tool_calls_per_completion": 1.0,
        "tool_failure_rate": 0.0,
        "turns": 2.0,
    }
    assert box.tally.take() == {"tools/add/calls": 2.0, "tools/add/failures": 0.0}


def test_a_failing_tool_is_answered_and_counted(tokenizer, tmp_path, monkeypatch):
    from grpo_cli import tool_loop

    samples = run(
        tokenizer, toolbox(tmp_path, monkeypatch, tool="broken"), model=scripted_model(tokenizer, "broken")
    )
    error = "{'error': 'broken raised RuntimeError: no adding today'}"
    assert samples[0][0].messages[1:] == [
        {"role": "tool", "name": "broken", "content": error},
        {"role": "assistant", "content": "The answer is " + error},
    ]
    assert tool_loop.tool_metrics(samples) == {
        "tool_calls_per_completion": 1.0,
        "tool_failure_rate": 1.0,
        "turns": 2.0,
    }


def test_the_iterations_cap_and_the_length_budget_end_a_rollout(tokenizer, tmp_path, monkeypatch):
    from grpo_cli.compat.trl import tool_suffix_ids

    box = toolbox(tmp_path, monkeypatch)
    (capped,), _ = run(tokenizer, box, max_iterations=0)
    assert capped.messages == [call(2, 3)] and (capped.tool_calls, capped.turns) == (0, 1)
    # A tool result that does not fit in max_completion_length is dropped, with no message, as TRL drops it: the
    # tool ran (counted), the rollout ends on the call.
    calls = len(tokenizer.encode(reply("<tools> Add 2 and 3."), add_special_tokens=False))
    (short,), _ = run(tokenizer, box, max_new_tokens=calls + 3)
    assert short.messages == [call(2, 3)] and (short.tool_calls, short.turns) == (1, 1)
    # The turn after the result is cut to what is left of the budget: here 3 tokens.
    suffix = tool_suffix_ids(tokenizer, [{"role": "tool", "name": "add", "content": "5"}], None, {})
    (cut,), _ = run(tokenizer, box, max_new_tokens=calls + len(suffix) + 3)
    assert (cut.length, cut.tool_tokens, cut.clipped) == (calls + 3, len(suffix), True)
    assert cut.messages[-1] == {
        "role": "assistant",
        "content": tokenizer.decode(tokenizer.encode("The answer is 5")[:3]),
    }


ENVIRONMENT = '''
class Counter:
    """Counts up to the row's answer."""

    def __init__(self):
        self.resets = 0

    def reset(self, answer=0, **row):
        self.resets += 1
        self.target, self.value = answer, 0
        return f" (reset {self.resets})"

    def add(self, a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first.
            b: The second.
        """
        self.value = a + b
        return self.value

    def get_reward(self) -> float:
        return float(self.value == self.target)
'''


def test_environments_are_pooled_reset_and_scored(tokenizer, tmp_path, monkeypatch):
    """batch_size 1: one instance serves both rollouts, reset before each; its observation ends the prompt."""
    from grpo_cli import tool_binding, tool_calls, tool_loop
    from grpo_cli.generation import Sampling
    from grpo_cli.recipe import Recipe

    write(tmp_path / "env.py", ENVIRONMENT)
    monkeypatch.chdir(tmp_path)
    recipe = Recipe.model_validate(
        {
            "model": {"name_or_path": "m"},
            "dataset": {"source": "d"},
            "environment": {"name": "./env.py:Counter"},
        }
    )
    box = tool_calls.toolbox(tool_binding.bind_all(recipe))
    sampling = Sampling(num_samples=1, max_new_tokens=256, seed=0)
    samples = tool_loop.rollouts(
        scripted_model(tokenizer), tokenizer, ROWS, box, sampling, max_iterations=None, batch_size=1
    )
    (first,), (second,) = samples
    assert first.prompt == [{"role": "user", "content": "Add 2 and 3. (reset 1)"}]
    assert second.prompt == [{"role": "user", "content": "Add 40 and 2. (reset 2)"}]
    assert second.messages[-1] == {"role": "assistant", "content": "The answer is 42"}
    assert (first.env_rewards, second.env_rewards) == ({"Counter": 1.0}, {"Counter": 1.0})


def train_with_trl(cli, tmp_path, monkeypatch, model) -> list[dict]:
    """One GRPO step through TRL's tool loop, its `_generate_single_turn` scripted with `reply`: what the reward
    was given (prompt, transcript, completion ids)."""
    import trl
    import yaml

    def single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
        texts = [reply(self._tokenizer.decode(ids)) for ids in prompt_ids]
        return [self._tokenizer.encode(t, add_special_tokens=False) for t in texts], None

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", single_turn)
    write(tmp_path / "calc.py", CALC)
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"question": r["prompt"][0]["content"], "answer": r["answer"]}) + "\n" for r in ROWS
        )
    )
    recipe = {
        "model": {"name_or_path": str(model)},
        "tool_template": "qwen2_5",
        "dataset": {"source": "train.jsonl", "prompt": "{question}"},
        "tools": [{"name": "./calc.py:add"}],
        "rewards": [{"name": "./calc.py:transcript_reward", "args": {"log": "scored.jsonl"}}],
        "trainer": {
            "max_steps": 1,
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_completion_length": 256,
            "learning_rate": 0.0,
        },
        "output_dir": "run",
    }
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    result = cli("train", "tools.yaml")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_loop_gives_what_trls_training_loop_gives(
    cli, tokenizer, tmp_path, monkeypatch, one_torch_thread
):
    """The same scripted model through TRL's GRPOTrainer and through tool_loop: the same transcript and the same
    completion token ids (the tool result's tokens included)."""
    from grpo_cli import tool_loop
    from grpo_cli.generation import Sampling

    scored = train_with_trl(cli, tmp_path, monkeypatch, tool_bpe_model(tmp_path / "model"))
    assert len(scored) == 2 and scored[0] == scored[1]
    rows = [{"prompt": scored[0]["prompt"], "answer": 0}]
    sampling = Sampling(num_samples=1, max_new_tokens=256, seed=0)
    ((mine,),) = tool_loop.rollouts(
        scripted_model(tokenizer),
        tokenizer,
        rows,
        toolbox(tmp_path, monkeypatch),
        sampling,
        max_iterations=None,
    )
    assert mine.messages == scored[0]["completion"] and len(mine.messages) == 3
    assert mine.token_ids == scored[0]["ids"]


# ---- the commands ----


@pytest.fixture
def tool_models(tmp_path, monkeypatch):
    """A base model and a "tuned" one (a run directory: weights, tokenizer, the tool recipe), both scripted: the
    tuned one calls `add`, the base one guesses 0. Returns the recipe's path."""
    import shutil

    import yaml
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    base = tool_bpe_model(tmp_path / "model")
    shutil.copytree(base, tmp_path / "tuned")
    write(tmp_path / "calc.py", CALC)
    rows = [{"question": f"Add {a} and {b}.", "answer": a + b} for a, b in [(2, 3), (40, 2), (7, 7), (1, 9)]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "model": {"name_or_path": str(base)},
        "tool_template": "qwen2_5",
        "dataset": {"source": str(tmp_path / "train.jsonl"), "prompt": "{question}", "eval_size": 2},
        "tools": [{"name": f"{tmp_path}/calc.py:add"}],
        "rewards": [{"name": f"{tmp_path}/calc.py:transcript_reward"}],
        "trainer": {"max_completion_length": 256, "max_tool_calling_iterations": 2},
    }
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "tuned" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    tokenizer = AutoTokenizer.from_pretrained(base)

    def generate(self, input_ids, attention_mask, generation_config=None, **kwargs):
        tool = "add" if "tuned" in str(self.config._name_or_path) else None
        return scripted_generate(tokenizer, tool)(input_ids, attention_mask)

    monkeypatch.setattr(Qwen2ForCausalLM, "generate", generate)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "tools.yaml"


def test_eval_runs_the_tools_baseline_vs_tuned(cli, tool_models, tmp_path):
    result = cli("eval", tool_models, "--model", tmp_path / "tuned", "--baseline", "--output-dir", "ev")
    assert result.exit_code == 0, result.output
    assert "does not run" not in result.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    tools = ("reward", "tool_calls_per_completion", "tool_failure_rate", "turns")
    assert {k: report["metrics"]["tuned"][k] for k in tools} == dict(
        zip(tools, [1.0, 1.0, 0.0, 2.0], strict=True)
    )
    assert {k: report["metrics"]["base"][k] for k in tools} == dict(
        zip(tools, [0.0, 0.0, 0.0, 1.0], strict=True)
    )
    assert {k: report["metrics"]["delta"][k] for k in tools} == dict(
        zip(tools, [1.0, 1.0, 0.0, 1.0], strict=True)
    )
    assert report["settings"]["max_tool_calling_iterations"] == 2 and report["settings"]["tools"] == ["add"]
    lines = [json.loads(line) for line in (tmp_path / "ev" / "eval_samples.jsonl").read_text().splitlines()]
    tuned = [line for line in lines if line["model"] == "tuned"]
    assert len(tuned) == 2 and len(lines) == 4
    for line in tuned:
        a, b = map(int, re.findall(r"Add (\d+) and (\d+)", line["prompt"][-1]["content"])[0])
        assert line["completion"] == [
            call(a, b),
            {"role": "tool", "name": "add", "content": str(a + b)},
            {"role": "assistant", "content": f"The answer is {a + b}"},
        ]
        assert (line["tool_calls"], line["tool_failures"], line["turns"], line["reward"]) == (1, 0, 2, 1.0)
    base = [line for line in lines if line["model"] == "base"]
    assert [line["completion"] for line in base] == 2 * [
        [{"role": "assistant", "content": "The answer is 0"}]
    ]


def test_generate_on_a_tool_run_shows_the_calls_and_results(cli, tool_models, tmp_path):
    result = cli("generate", tmp_path / "tuned", "--prompt", "Add 2 and 3.")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        ">>> Add 2 and 3.",
        '-> add({"a": 2, "b": 3})',
        "<- add: 5",
        "The answer is 5",
    ]


def test_rewards_test_scores_a_saved_transcript(cli, tmp_path):
    write(tmp_path / "calc.py", CALC)
    transcript = [
        {"role": "user", "content": "Add 2 and 3."},
        call(2, 3),
        {"role": "tool", "name": "add", "content": "5"},
        {"role": "assistant", "content": "The answer is 5"},
    ]
    lines = [{"messages": transcript, "answer": 5}, {"messages": transcript, "answer": 6}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = cli(
        "rewards", "test", "-r", f"{tmp_path}/calc.py:transcript_reward", "-f", tmp_path / "t.jsonl", "--json"
    )
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["completion"] for s in scored] == 2 * [transcript[1:]]
    assert [s["scores"] for s in scored] == [{"transcript_reward": 1.0}, {"transcript_reward": 0.0}]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": transcript[:1]}) + "\n")
    result = cli(
        "rewards", "test", "-r", f"{tmp_path}/calc.py:transcript_reward", "-f", tmp_path / "bad.jsonl"
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f'error: {tmp_path / "bad.jsonl"}:1: "messages" must be a list of {{role, content}} with an assistant turn\n'
    )
