"""Is grpo-cli ready for a GPU? The shipped real-model recipes' shape, on a model shaped like theirs, end to end.

    python benchmarks/gpu_readiness.py                 # CUDA: a Qwen2.5-0.5B-sized Qwen2, 10 steps per run
    python benchmarks/gpu_readiness.py --steps 3 --length 128 --runs grpo-lora,trl-grpo-lora

The recipes (`recipes/gsm8k-grpo.yaml`, `recipes/gsm8k-ppo.yaml`) name Qwen/Qwen2.5-0.5B-Instruct and the Hub's
GSM8K; nothing here downloads. Instead:

- the model is a Qwen2 with Qwen2.5-0.5B-Instruct's config (494M parameters, vocabulary 151,936, 24 layers) and
  random weights, saved with `save_pretrained` and loaded by the recipes through `model.name_or_path` as the Hub
  model would be; its tokenizer is byte-level BPE with Qwen2.5's vocabulary size and special tokens (the merges
  are synthetic: every byte pair, then byte triples) and the ChatML template of tests/realistic_model.py;
- the data is GSM8K-like word problems generated here (`question`, and `answer` ending in "#### N").

Each run is the shipped recipe with only the model, the data, the step count and saving changed (and on a CPU the
batch and length shrunk), each in its own subprocess, one after the other:

  grpo-lora        `grpo-cli train` of gsm8k-grpo: GRPO + LoRA, transformers generation
  grpo-lora-vllm   the same with `use_vllm: true, vllm_mode: colocate` (only when vLLM imports and CUDA is there;
                   TRL sets the one-process torch.distributed variables vLLM needs)
  ppo-lora         `grpo-cli train` of gsm8k-ppo: PPO + LoRA, the critic trained in full
  trl-grpo-lora    a plain TRL script: GRPOTrainer with the same config, model, data and reward functions,
                   without grpo-cli, to tell grpo-cli's overhead from TRL's

Reported: seconds per step (median of step-to-step times, the first step left out as warm-up), completion tokens
per second (completions per step x their mean length / s per step; random weights rarely emit EOS, so nearly
every completion runs to the limit), peak GPU memory (`torch.cuda.max_memory_allocated` in the child) and peak
RSS. On a machine without CUDA it falls back to a tiny Qwen2 (same tokenizer and vocabulary) with short
completions and few steps, which checks the whole path, not the speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.realistic_model: one owner for Qwen2.5's template and special tokens

# A grpo-cli run in a child (its exit code and peak GPU memory), as the GRPO-vs-PPO benchmark runs one.
from benchmarks.grpo_vs_ppo import CHILD  # noqa: E402

# Qwen2.5-0.5B-Instruct's config.json (the shape; the weights here are random).
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
QWEN25_VOCAB = 151936  # embedding rows; the tokenizer has 151,665 tokens (151,643 ordinary + 22 special)
QWEN25_ORDINARY_TOKENS = 151643
QWEN25_SPECIAL_TOKENS = 22
CPU_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


# The same GRPO run with TRL alone: what a user without grpo-cli would write.
TRL_CHILD = """
import json, re, sys, time
import torch, yaml
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

recipe = yaml.safe_load(open(sys.argv[1]))
model_dir, data_file = recipe["model"]["name_or_path"], recipe["dataset"]["source"]
system = recipe["dataset"]["system_prompt"]

def to_chat(row):
    return {"prompt": [{"role": "system", "content": system}, {"role": "user", "content": row["question"]}]}

def accuracy(completions, answer, **kwargs):
    found = [re.findall(r"-?\\d+", c[-1]["content"]) for c in completions]
    return [float(bool(f) and f[-1] == a.split("####")[-1].strip()) for f, a in zip(found, answer)]

def format_ok(completions, **kwargs):
    pattern = r"\\s*<think>.*?</think>\\s*<answer>.*?</answer>\\s*"
    return [float(re.fullmatch(pattern, c[-1]["content"], re.DOTALL) is not None) for c in completions]

class Times(TrainerCallback):
    def __init__(self):
        self.start, self.rows = time.monotonic(), []
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" not in logs:
            self.rows.append({"step": state.global_step, "time": time.monotonic() - self.start,
                              "completion_length": logs.get("completions/mean_length")})

cuda = torch.cuda.is_available()
bf16 = cuda and torch.cuda.is_bf16_supported()
tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
lora = recipe["lora"]
times = Times()
trainer = GRPOTrainer(
    model=model,
    reward_funcs=[accuracy, format_ok],
    args=GRPOConfig(output_dir=sys.argv[3], seed=recipe["seed"], bf16=bf16, use_cpu=not cuda, report_to="none",
                    logging_steps=1, disable_tqdm=True, **recipe["trainer"]),
    train_dataset=load_dataset("json", data_files=data_file, split="train").map(to_chat),
    processing_class=tokenizer,
    peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                           target_modules=lora["target_modules"], task_type="CAUSAL_LM"),
    callbacks=[times],
)
trainer.train()
with open(sys.argv[3] + "/metrics.jsonl", "w") as f:
    f.writelines(json.dumps(row) + "\\n" for row in times.rows)
gpu = torch.cuda.max_memory_allocated() if cuda else None
json.dump({"exit_code": 0, "gpu_peak_bytes": gpu}, open(sys.argv[2], "w"))
"""


# ---- the model and the data ----


def qwen_sized_tokenizer(corpus: list[str]):
    """Byte-level BPE with Qwen2.5's vocabulary size and special tokens, ChatML template, EOS <|im_end|>, pad
    <|endoftext|>.

    The merges that matter are learned from `corpus` (the prompts), so they split into words much as Qwen2.5's do
    (prompt length drives the cost of every forward pass); the rest of the vocabulary is synthetic (byte pairs,
    then byte triples), there so that every id the random model emits decodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.realistic_model import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START

    learned = Tokenizer(models.BPE())
    learned.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = trainers.BpeTrainer(vocab_size=4000, initial_alphabet=alphabet, show_progress=False)
    learned.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(learned.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    pairs = ((a, b) for a, b in itertools.product(alphabet, repeat=2))
    triples = ((a + b, c) for a, b, c in itertools.product(alphabet, repeat=3))
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) == QWEN25_ORDINARY_TOKENS:
            break
        if left in vocab and left + right not in vocab:
            merges.append((left, right))
            vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    extra = [f"<|reserved_{i}|>" for i in range(QWEN25_SPECIAL_TOKENS - 3)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END, *extra],
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert len(tokenizer) == QWEN25_ORDINARY_TOKENS + QWEN25_SPECIAL_TOKENS, len(tokenizer)
    return tokenizer


def save_model(directory: Path, shape: dict, dtype_name: str, corpus: list[str]) -> int:
    """A random-weight Qwen2 of `shape` with the Qwen-sized tokenizer, saved as a Hub model is; its parameter count."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tests.realistic_model import ENDOFTEXT, save_tokenizer

    tokenizer = qwen_sized_tokenizer(corpus)
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=QWEN25_VOCAB, bos_token_id=endoftext, eos_token_id=tokenizer.eos_token_id, **shape
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype_name))
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[tokenizer.eos_token_id, endoftext], pad_token_id=endoftext
    )
    model.save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    return sum(p.numel() for p in model.parameters())


def prompt_length(model_dir: Path, system_prompt: str, row: dict) -> int:
    """Tokens in one prompt as the trainers build it: system and user message through the chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": row["question"]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def word_problems(count: int, seed: int = 0) -> list[dict]:
    """GSM8K's columns: a two-step word problem and a worked answer ending in "#### N"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        boxes, per_box, eaten = rng.randint(2, 9), rng.randint(3, 12), rng.randint(1, 9)
        total = boxes * per_box - eaten
        question = (
            f"A baker fills {boxes} boxes with {per_box} muffins each, then sells {eaten} of the muffins. "
            "How many muffins does the baker have left?"
        )
        answer = f"{boxes} boxes hold {boxes} * {per_box} = {boxes * per_box} muffins. {boxes * per_box} - {eaten} = {total}.\n#### {total}"
        rows.append({"question": question, "answer": answer})
    return rows


# ---- the runs ----


def shipped(name: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())


def recipe(name: str, args, out: Path, model_dir: Path, data_file: Path) -> dict:
    """The shipped recipe behind run `name`, pointed at the local model and data, for a fixed number of steps."""
    grpo = "grpo" in name
    data = shipped("gsm8k-grpo" if grpo else "gsm8k-ppo")
    data.pop("eval", None)
    data["output_dir"] = str(out / name)
    data["model"]["name_or_path"] = str(model_dir)
    data["dataset"] = {**data["dataset"], "source": str(data_file), "config": None, "eval_split": None}
    trainer = data["trainer"]
    trainer.update(max_steps=args.steps, save_strategy="no", lr_scheduler_type="constant")
    trainer.pop("save_steps", None)
    trainer.pop("warmup_steps", None)
    if grpo:
        trainer["max_completion_length"] = args.length
        if not args.cuda:  # a CPU: the shape's ratios, far fewer completions
            trainer.update(num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=1)
        if name.endswith("vllm"):
            trainer.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3)
    else:
        trainer["response_length"] = args.length
        if not args.cuda:
            trainer.update(per_device_train_batch_size=2, gradient_accumulation_steps=2)
            trainer["local_rollout_forward_batch_size"] = 2
    return data


def run_child(code: str, recipe_path: Path, extra_args: list[str]) -> dict:
    """Run one child; its own peak RSS (MiB), wall time and what it reported."""
    report = recipe_path.with_suffix(".result.json")
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(recipe_path), str(report), *extra_args],
        env={
            **os.environ,
            "TRL_EXPERIMENTAL_SILENCE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    code_ = os.waitstatus_to_exitcode(status)
    result = json.loads(report.read_text()) if report.exists() else {"exit_code": code_}
    if code_ or result.get("exit_code"):
        return {"failed": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code_}"}
    return {**result, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.monotonic() - started}


def step_stats(metrics_file: Path, completions_per_step: int, length_limit: int) -> dict:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    times = [row["time"] for row in rows]
    per_step = statistics.median(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else times[0]
    # PPO's metrics.jsonl has no completion_length yet (issue 14 item 3): count the limit, an upper bound.
    lengths = [row["completion_length"] for row in rows if row.get("completion_length") is not None]
    length = statistics.mean(lengths) if lengths else length_limit
    return {
        "steps": len(rows),
        "s_per_step": per_step,
        "length": length,
        "length_measured": bool(lengths),
        "tokens_per_s": completions_per_step * length / per_step,
    }


def completions_per_step(data: dict) -> int:
    trainer = data["trainer"]
    return trainer["per_device_train_batch_size"] * trainer.get("gradient_accumulation_steps", 1)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per run (default: 10 on CUDA, 2 on a CPU)"
    )
    parser.add_argument(
        "--length", type=int, default=None, help="completion tokens (default: the recipes' 512; 8 on a CPU)"
    )
    parser.add_argument("--runs", default="grpo-lora,grpo-lora-vllm,ppo-lora,trl-grpo-lora")
    parser.add_argument(
        "--out", type=Path, default=None, help="where the model and runs go (default: a temp dir)"
    )
    args = parser.parse_args()
    args.cuda = torch.cuda.is_available()
    args.steps = args.steps or (10 if args.cuda else 2)
    args.length = args.length or (
        shipped("gsm8k-grpo")["trainer"]["max_completion_length"] if args.cuda else 8
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu_readiness-"))
    out.mkdir(parents=True, exist_ok=True)

    shape = QWEN25_05B if args.cuda else CPU_SHAPE
    bf16 = args.cuda and torch.cuda.is_bf16_supported()
    started = time.monotonic()
    rows = word_problems(512)
    corpus = [shipped("gsm8k-grpo")["dataset"]["system_prompt"]] + [
        r["question"] + " " + r["answer"] for r in rows
    ]
    parameters = save_model(out / "model", shape, "bfloat16" if bf16 else "float32", corpus)
    data_file = out / "gsm8k_like.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prompt_tokens = prompt_length(out / "model", corpus[0], rows[0])
    device = (
        torch.cuda.get_device_name() if args.cuda else f"CPU ({os.cpu_count()} cores), tiny fallback model"
    )
    vllm = args.cuda and importlib.util.find_spec("vllm") is not None
    print(
        f"model: Qwen2 {'Qwen2.5-0.5B shape' if args.cuda else 'tiny'} (hidden {shape['hidden_size']}, "
        f"{shape['num_hidden_layers']} layers, vocabulary {QWEN25_VOCAB}), {parameters / 1e6:.1f}M parameters, "
        f"random weights, {'bf16' if bf16 else 'fp32'}; built and saved in {time.monotonic() - started:.0f} s; "
        f"a prompt is {prompt_tokens} tokens"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{device}; {platform.machine()}, load average {load}; torch {torch.__version__}; "
        f"{args.steps} steps per run, completions up to {args.length} tokens; vLLM {'found' if vllm else 'not found'}\n"
    )

    header = (
        "| run | completions/step | s/step | completion tokens/s | peak GPU MiB | peak RSS MiB | wall s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.runs.split(","):
        if name == "grpo-lora-vllm" and not vllm:
            print(f"| {name} | skipped: {'vLLM is not installed' if args.cuda else 'no CUDA'} | | | | | |")
            continue
        data = recipe(name, args, out, out / "model", data_file)
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        if name.startswith("trl-"):
            (out / name).mkdir(exist_ok=True)
            result = run_child(TRL_CHILD, path, [str(out / name)])
        else:
            result = run_child(CHILD, path, [])
        if "failed" in result:
            print(f"| {name} | failed: {result['failed'][:200]} | | | | | |", flush=True)
            continue
        stats = step_stats(out / name / "metrics.jsonl", completions_per_step(data), args.length)
        gpu = result.get("gpu_peak_bytes")
        tokens = f"{stats['tokens_per_s']:.0f}" + ("" if stats["length_measured"] else " (at most)")
        cells = [
            name,
            str(completions_per_step(data)),
            f"{stats['s_per_step']:.2f}",
            tokens,
            f"{gpu / 2**20:.0f}" if gpu is not None else "-",
            f"{result['peak_rss_mib']:.0f}",
            f"{result['wall_s']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nmodel, recipes and runs in {out}")


if __name__ == "__main__":
    main()
