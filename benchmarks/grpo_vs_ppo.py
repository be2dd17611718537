"""GRPO against PPO on the same model, task and number of sampled completions per step: peak memory, seconds per
step, reward reached.

    python benchmarks/grpo_vs_ppo.py                      # ~33M-parameter Qwen2, 10 steps per run, 16 completions
    python benchmarks/grpo_vs_ppo.py --steps 10 --hidden 768 --layers 12 --out /tmp/bench

Every run is `grpo-cli train` on the `addition` recipe's task (single-digit addition, rewards accuracy + 0.5 closeness)
with a model built from a config big enough that weights dominate memory. Each run is its own subprocess, one
after the other, so each peak resident memory (`os.wait4`, for that child alone) belongs to one run; a baseline
child imports the same libraries and builds the same model without training, and "added by training" is the peak
minus that baseline. Seconds per step is the median of the step-to-step times in metrics.jsonl, the first step
(warm-up) left out. On a machine with CUDA, the children train on the GPU and the peak GPU memory is shown too.

The runs, all with the same completions per step (GRPO: prompts x num_generations; PPO: prompts, one each) and the
same completion length:
  grpo             full fine-tuning, beta 0 (TRL's default: no reference model)
  grpo+ref         full fine-tuning, beta 0.04 (a KL term to a frozen reference copy, as in DeepSeekMath)
  ppo              full fine-tuning, num_ppo_epochs 1 (one pass over each batch, like GRPO's num_iterations 1)
  ppo-4-epochs     the same with TRL's default of 4 PPO epochs
  grpo-lora, ppo-lora   LoRA r=16 on all linear layers (PPO's critic is still trained in full, as TRL does)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CHILD = """
import json, sys
import torch
from grpo_cli.cli import app
code = 0
try:
    app(["train", sys.argv[1], "--overwrite"], prog_name="grpo-cli")
except SystemExit as exit:
    code = exit.code or 0
gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
json.dump({"exit_code": code, "gpu_peak_bytes": gpu}, open(sys.argv[2], "w"))
"""

BASELINE = """
import json, sys, os
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
import torch, trl, peft
from trl import GRPOTrainer
from trl.experimental.ppo import PPOTrainer
from grpo_cli import models
from grpo_cli.recipe import load_recipe
recipe = load_recipe(sys.argv[1])
model, _ = models.load_model(recipe.model, recipe.seed)
if torch.cuda.is_available():
    model.to("cuda")
params = sum(p.numel() for p in model.parameters())
gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
json.dump(
    {"exit_code": 0, "gpu_peak_bytes": gpu, "parameters": params, "torch": torch.__version__}, open(sys.argv[2], "w")
)
"""


def recipe(name: str, args, out: Path) -> dict:
    grpo = name.startswith("grpo")
    trainer = {
        "learning_rate": 1e-3 if "lora" in name else 1e-4,
        "max_steps": args.steps,
        "save_strategy": "no",
        "lr_scheduler_type": "constant",
    }
    if grpo:
        trainer |= {
            "num_generations": args.generations,
            "per_device_train_batch_size": args.completions,  # completions: prompts x num_generations
            "max_completion_length": args.length,
            "beta": 0.04 if name == "grpo+ref" else 0.0,
        }
    else:
        trainer |= {
            "per_device_train_batch_size": args.completions,  # prompts, one completion each
            "response_length": args.length,
            "num_ppo_epochs": 4 if name == "ppo-4-epochs" else 1,
        }
    return {
        "algorithm": "grpo" if grpo else "ppo",
        "seed": 0,
        "output_dir": str(out / name),
        "model": {
            "from_config": {
                "model_type": "qwen2",
                "vocabulary": "0123456789+=",
                "hidden_size": args.hidden,
                "num_hidden_layers": args.layers,
                "num_attention_heads": 8,
                "max_position_embeddings": 64,
            }
        },
        **({"lora": {"r": 16, "alpha": 32, "dropout": 0.0}} if "lora" in name else {}),
        "dataset": {
            "generate": {"task": "addition", "size": 100},
            "prompt": "{question}",
            "eval_size": 20,
        },
        "rewards": [{"name": "accuracy"}, {"name": "closeness", "weight": 0.5}],
        "trainer": trainer,
    }


def run_child(code: str, recipe_path: Path, threads: int) -> dict:
    """Run one child; its own peak RSS (MiB), wall time and what it reported."""
    report = recipe_path.with_suffix(".result.json")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRL_EXPERIMENTAL_SILENCE": "1"}
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(recipe_path), str(report)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(report.read_text()) if report.exists() else {"exit_code": child.returncode}
    if child.returncode or result.get("exit_code"):
        sys.exit(f"{recipe_path.stem} failed:\n{stderr[-3000:]}")
    return {**result, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.monotonic() - started}


def step_stats(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [row["time"] for row in rows]
    rewards = [row["reward"] for row in rows if row.get("reward") is not None]
    summary = json.loads((run / "summary.json").read_text())
    tail = rewards[-3:]
    return {
        "steps": len(rows),
        "s_per_step": statistics.median(b - a for a, b in itertools.pairwise(times)),
        "first_reward": rewards[0],
        "last_reward": sum(tail) / len(tail),
        "trainable": summary.get("trainable_parameters", 0) + summary.get("value_model_parameters", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--completions", type=int, default=16, help="sampled completions per step (both)")
    parser.add_argument("--generations", type=int, default=8, help="GRPO's completions per prompt")
    parser.add_argument("--length", type=int, default=3, help="completion length in tokens (both)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every child")
    parser.add_argument("--runs", default="grpo,grpo+ref,ppo,ppo-4-epochs,grpo-lora,ppo-lora")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="grpo_vs_ppo-"))
    out.mkdir(parents=True, exist_ok=True)

    names = args.runs.split(",")
    base_path = out / "baseline.yaml"
    base_path.write_text(yaml.safe_dump(recipe(names[0], args, out)))
    baseline = run_child(BASELINE, base_path, args.threads)
    params = baseline["parameters"]
    print(
        f"model: Qwen2 hidden {args.hidden}, {args.layers} layers, {params / 1e6:.1f}M parameters "
        f"({params * 4 / 2**20:.0f} MiB in fp32); {args.completions} completions of {args.length} tokens per step, "
        f"{args.steps} steps; OMP_NUM_THREADS={args.threads}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load}; torch {baseline['torch']}"
    )
    print(f"baseline (libraries + model, no training): peak RSS {baseline['peak_rss_mib']:.0f} MiB\n")

    gpu = baseline.get("gpu_peak_bytes") is not None
    header = "| run | trainable params | peak RSS MiB | added by training MiB | s/step | reward: step 1 -> last 3 |"
    if gpu:
        header = header.replace("| s/step", "| peak GPU MiB | s/step")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in names:
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe(name, args, out), sort_keys=False))
        result = run_child(CHILD, path, args.threads)
        stats = step_stats(out / name)
        cells = [
            name,
            f"{stats['trainable'] / 1e6:.2f}M",
            f"{result['peak_rss_mib']:.0f}",
            f"{result['peak_rss_mib'] - baseline['peak_rss_mib']:.0f}",
        ]
        if gpu:
            cells.append(f"{result['gpu_peak_bytes'] / 2**20:.0f}")
        cells += [f"{stats['s_per_step']:.2f}", f"{stats['first_reward']:.3f} -> {stats['last_reward']:.3f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
