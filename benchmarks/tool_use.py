"""The shipped `tool-use` recipe, measured on its 100 held-out problems: accuracy with the calculator tool (after
SFT, after GRPO) and without it (the same architecture SFT'd on direct answers, with the same data and steps).

    python benchmarks/tool_use.py [--workdir DIR] [--skip-train]

Trains `grpo-cli train tool-use` (timed) and the no-tool baseline (`tool-use/sft.yaml` turned into direct
answers by overrides) under DIR (default a temporary directory), then evaluates greedily. `grpo-cli eval` does
not run tools in this version, so the tool loop is run here, as TRL's GRPOTrainer runs it in training: render the
prompt with the tool's schema, generate to the end of the turn, parse the call with TRL's parser for the template
(`parse_response`), append the tool's result and generate again, at most `max_tool_calling_iterations` rounds.
A completion is right when its last assistant message's last number is the sum (the `accuracy` reward).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def grpo_cli(*args: str, cwd: Path) -> float:
    """Run the CLI; the wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grpo_cli", *args], cwd=cwd, check=True)
    return time.perf_counter() - start


def held_out_problems(run: Path) -> list[dict]:
    """The held-out rows of the run's own recipe, split as training split them."""
    from grpo_cli.data import load_splits
    from grpo_cli.recipe import load_recipe

    recipe = load_recipe(run / "recipe.yaml")
    _train, held_out = load_splits(recipe.dataset, recipe.seed)
    seen, rows = set(), []
    for row in held_out:  # the SFT data has two rows a problem
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append({"question": row["question"], "answer": row["answer"]})
    return rows


def load(run: Path):
    """(model, tokenizer) of a run: a saved model, or a LoRA adapter on its base run's model."""
    from transformers import AutoModelForCausalLM

    from grpo_cli.models import load_tokenizer

    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(run)
    tokenizer = load_tokenizer(str(run))
    return model.eval(), tokenizer


def generate(model, tokenizer, sequences: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of token sequences (left-padded into one batch), each cut after its EOS."""
    import torch

    width = max(map(len, sequences))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(s) for s in sequences])[:, None]).long()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    results = []
    for row in out[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        results.append([t for t in row if t != pad])
    return results


def tool_accuracy(model, tokenizer, problems: list[dict], tools: list, iterations: int = 1) -> dict:
    """Held-out accuracy running the tool loop (greedy), calls per completion, and the transcripts."""
    from trl.chat_template_utils import add_response_schema, parse_response

    from rewards.accuracy import accuracy_reward

    add_response_schema(tokenizer)
    names = {t.__name__: t for t in tools}
    chats = [[{"role": "user", "content": p["question"]}] for p in problems]
    prompts = [
        tokenizer.apply_chat_template(
            c, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for c in chats
    ]
    contexts = [list(p) for p in prompts]
    completions: list[list[dict]] = [[] for _ in problems]
    calls = 0
    active = list(range(len(problems)))
    for round_ in range(iterations + 1):
        outputs = generate(model, tokenizer, [contexts[i] for i in active], max_new_tokens=32)
        still = []
        for i, ids in zip(active, outputs, strict=True):
            message = parse_response(tokenizer, ids, prefix=contexts[i])
            completions[i].append(message)
            contexts[i] += ids
            if message.get("tool_calls") and round_ < iterations:
                results = []
                for call in message["tool_calls"]:
                    calls += 1
                    function = call["function"]
                    try:
                        content = names[function["name"]](**function["arguments"])
                    except Exception as err:
                        content = json.dumps({"error": str(err)})
                    results.append({"role": "tool", "name": function["name"], "content": content})
                completions[i] += results
                # The conversation so far as the template renders it, ready for the next assistant turn (TRL
                # appends the same tool-result tokens to the generated ids; the same ids for a well-formed call).
                contexts[i] = tokenizer.apply_chat_template(
                    chats[i] + completions[i],
                    tools=tools,
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=False,
                )
                still.append(i)
        active = still
        if not active:
            break
    scores = accuracy_reward(completions, answer=[p["answer"] for p in problems])
    return {
        "accuracy": sum(s or 0.0 for s in scores) / len(problems),
        "tool_calls_per_completion": calls / len(problems),
        "transcripts": completions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--skip-train", action="store_true", help="evaluate the runs already in --workdir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tool-use-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.path.insert(0, str(REPO))
    times = {}
    if not args.skip_train:
        times["tool-use (SFT + GRPO)"] = grpo_cli("train", "tool-use", cwd=workdir)
        times["no-tool baseline SFT"] = grpo_cli(
            "train", "tool-use/sft", "output_dir=runs/no-tool-sft", "dataset.generate.task=addition",
            'dataset.completion="{answer}"', "model.from_config.chat_template=null", "model.from_config.eos_token=null",
            cwd=workdir,
        )  # fmt: skip
    from grpo_cli.builtin_tools.calculator import calculator

    runs = workdir / "runs"
    problems = held_out_problems(runs / "tool-use-sft")
    report = {"held_out": len(problems), "train_seconds": {k: round(v) for k, v in times.items()}}
    for name in ("tool-use-sft", "tool-use-grpo"):
        model, tokenizer = load(runs / name)
        measured = tool_accuracy(model, tokenizer, problems, [calculator])
        measured["example"] = measured.pop("transcripts")[0]
        report[f"{name} with the tool"] = measured
    model, tokenizer = load(runs / "no-tool-sft")
    report["no-tool-sft, direct answer"] = direct_accuracy(model, tokenizer, problems)
    print(json.dumps(report, indent=1))


def direct_accuracy(model, tokenizer, problems: list[dict]) -> dict:
    """Held-out accuracy of a model SFT'd on `question` -> `answer` text (no template, no tool), greedy."""
    from rewards.accuracy import accuracy_reward

    prompts = [tokenizer(p["question"])["input_ids"] for p in problems]
    texts = [
        tokenizer.decode(ids, skip_special_tokens=True) for ids in generate(model, tokenizer, prompts, 8)
    ]
    scores = accuracy_reward(texts, answer=[p["answer"] for p in problems])
    return {
        "accuracy": sum(s or 0.0 for s in scores) / len(problems),
        "example": f"{problems[0]['question']}{texts[0]}",
    }


if __name__ == "__main__":
    main()
