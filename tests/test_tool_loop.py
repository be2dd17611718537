"""TRL's tool loop driven from a recipe, on a scripted model: the stub `generate` below answers a question with a
known tool call, and after the tool's result with the text "The answer is <result>". What the tool receives, the
transcript the reward scores, the reward and the tool metrics in metrics.jsonl are asserted exactly."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import tool_bpe_model, write

TOOLS = '''
import json


def add(a: int, b: int, log: str = "") -> int:
    """Add two integers.

    Args:
        a: The first.
        b: The second.
        log: Set by the recipe, hidden from the model.
    """
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


def transcript_reward(completions, answer, log="", **kwargs):
    with open(log, "a") as f:
        f.write(json.dumps(completions) + "\\n")
    return [float(c[-1]["content"] == f"The answer is {a}") for c, a in zip(completions, answer)]
'''


def scripted_turns(tool: str):
    """A replacement for GRPOTrainer._generate_single_turn: a tool call first, then the answer read from the result."""

    def generate(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
        out = []
        for ids in prompt_ids:
            text = self._tokenizer.decode(ids)
            results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S)
            if results:
                reply = f"The answer is {results[-1]}<|im_end|>"
            else:
                a, b = re.findall(r"Add (\d+) and (\d+)", text)[-1]
                call = {"name": tool, "arguments": {"a": int(a), "b": int(b)}}
                reply = f"<tool_call>\n{json.dumps(call)}\n</tool_call><|im_end|>"
            out.append(self._tokenizer.encode(reply, add_special_tokens=False))
        return out, None

    return generate


@pytest.fixture
def tool_run(tmp_path, monkeypatch):
    model = tool_bpe_model(tmp_path / "model")
    write(tmp_path / "calc.py", TOOLS)
    rows = [{"question": f"Add {a} and {b}.", "answer": a + b} for a, b in [(2, 3), (40, 2)]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(cli, tool: str):
        import trl

        monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", scripted_turns(tool))
        recipe = {
            "model": {"name_or_path": str(model)},
            "tool_template": "qwen2_5",
            "dataset": {"source": "train.jsonl", "prompt": "{question}"},
            "tools": [
                {"name": f"./calc.py:{tool}", **({"args": {"log": "calls.jsonl"}} if tool == "add" else {})}
            ],
            "rewards": [{"name": "./calc.py:transcript_reward", "args": {"log": "transcripts.jsonl"}}],
            "trainer": {
                "max_steps": 1,
                "num_generations": 2,
                "per_device_train_batch_size": 2,
                "max_completion_length": 256,
                "learning_rate": 0.0,
            },
            "output_dir": "run",
        }
        import yaml

        (tmp_path / "tools.yaml").write_text(yaml.safe_dump(recipe))
        monkeypatch.chdir(tmp_path)
        result = cli("train", "tools.yaml")
        assert result.exit_code == 0, result.output
        metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        transcripts = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
        return metrics, transcripts

    return run


def test_the_model_calls_the_tool_and_is_rewarded(cli, tool_run, tmp_path, one_torch_thread):
    metrics, transcripts = tool_run(cli, "add")
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    (batch,) = transcripts  # one step: one prompt, two completions
    assert len(calls) == 2 and calls[0] == calls[1] and calls[0] in ({"a": 2, "b": 3}, {"a": 40, "b": 2})
    a, b = calls[0]["a"], calls[0]["b"]
    assert batch == 2 * [
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "add", "arguments": {"a": a, "b": b}}}
                ],
            },
            {"role": "tool", "name": "add", "content": str(a + b)},
            {"role": "assistant", "content": f"The answer is {a + b}"},
        ]
    ]
    (step,) = [m for m in metrics if "reward" in m]
    assert step["reward"] == 1.0
    assert step["tools/call_frequency"] == 1.0
    assert step["tools/failure_frequency"] == 0.0
    assert step["tools/add/calls"] == 2.0 and step["tools/add/failures"] == 0.0


def test_a_failing_tool_is_an_error_the_model_reads(cli, tool_run, one_torch_thread):
    metrics, transcripts = tool_run(cli, "broken")
    (batch,) = transcripts
    assert batch[0][1] == {
        "role": "tool",
        "name": "broken",
        "content": "{'error': 'broken raised RuntimeError: no adding today'}",
    }
    (step,) = [m for m in metrics if "reward" in m]
    assert step["tools/failure_frequency"] == 1.0
    assert step["tools/broken/calls"] == 2.0 and step["tools/broken/failures"] == 2.0
    assert step["reward"] == 0.0


def test_a_template_without_tool_calls_is_refused_before_the_run(cli, tmp_path, monkeypatch):
    """The realistic tokenizer's ChatML template has no tool branches: train stops before the run directory."""
    from grpo_cli.recipe import TOOL_TEMPLATES

    model = tool_bpe_model(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "Add 1 and 2.", "answer": 3}) + "\n")
    write(
        tmp_path / "r.yaml",
        f"model: {{name_or_path: {model}}}\ndataset: {{source: train.jsonl, prompt: '{{question}}'}}\n"
        "tools: [{name: calculator}]\nrewards: [{name: accuracy}]\noutput_dir: run\n"
        "trainer: {max_steps: 1, num_generations: 2, per_device_train_batch_size: 2}\n",
    )
    monkeypatch.chdir(tmp_path)
    result = cli("train", "r.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: r.yaml: tool_template: the tokenizer cannot render a tool call and its result; set tool_template: "
        f"to one of TRL's templates ({', '.join(TOOL_TEMPLATES)}), or give the model a template that renders "
        "assistant tool_calls and tool messages"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_real_generation_with_tools_trains(cli, tmp_path, monkeypatch, one_torch_thread):
    """No script: the realistic BPE model under TRL's qwen2_5 template generates (random text, rarely a tool call),
    and a run with tools trains, logging TRL's tool metrics and grpo-cli's summary as any run."""
    model = tool_bpe_model(tmp_path / "model")
    rows = [{"question": f"Add {a} and {b}.", "answer": a + b} for a, b in [(2, 3), (40, 2), (7, 7), (1, 9)]]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write(
        tmp_path / "r.yaml",
        f"model: {{name_or_path: {model}}}\ntool_template: qwen2_5\n"
        "dataset: {source: train.jsonl, prompt: '{question}'}\ntools: [{name: calculator}]\n"
        "rewards: [{name: accuracy}]\noutput_dir: run\n"
        "trainer: {max_steps: 2, num_generations: 2, per_device_train_batch_size: 2, max_completion_length: 16, "
        "max_tool_calling_iterations: 1}\n",
    )
    monkeypatch.chdir(tmp_path)
    result = cli("train", "r.yaml")
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(m["tools/failure_frequency"] >= 0 and m["tools/call_frequency"] >= 0 for m in steps)
    saved = (tmp_path / "run" / "tokenizer_config.json").read_text() + "".join(
        p.read_text() for p in (tmp_path / "run").glob("chat_template.jinja")
    )
    assert "<tools>" in saved  # the tool template is saved with the run, for generate and eval
