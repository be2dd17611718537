"""Eval generation: completions per second, batched vs one prompt at a time, on the same model and prompts.

    python benchmarks/eval_generation.py                      # the quickstart's model size and a larger one
    python benchmarks/eval_generation.py --model runs/addition --prompts 128

`grpo-cli eval` generates with `grpo_cli.generation.generate`, left-padding `--batch-size` completions into one
`model.generate` call. This runs that function twice on the same model, prompts and settings, once with the eval
default batch size and once with a batch of one, and prints a markdown table (for BENCHMARKS.md).

The models are built from a config with random weights (no download), so nearly every completion runs to the
length limit and both ways generate the same number of tokens; `--model DIR` measures a saved model instead.
Each timing is the median of `--repeats` runs after one warm-up batch; the two ways take turns.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from grpo_cli import generation, models, prompting
from grpo_cli.recipe import FromConfig
from grpo_cli.tasks import addition_task

VOCABULARY = "0123456789+="


def build(size: str):
    """A random model of `WIDTHxLAYERS` (e.g. 64x2, the quickstart's) and its character tokenizer."""
    width, layers = (int(x) for x in size.split("x"))
    spec = FromConfig(
        vocabulary=VOCABULARY, hidden_size=width, num_hidden_layers=layers, num_attention_heads=4
    )
    return models.build_from_config(spec, seed=0)


def load(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path), models.load_tokenizer(path)


def measure(model, tokenizer, prompt_ids, sampling, batch_sizes: list[int], repeats: int) -> dict[int, tuple]:
    """batch size -> (median seconds, tokens generated) for all completions of all prompts.

    The batch sizes take turns within each repeat, so load from other processes falls on all of them alike.
    """
    for batch_size in batch_sizes:
        generation.generate(model, tokenizer, prompt_ids[:batch_size], sampling, batch_size)  # warm-up
    times = {batch_size: [] for batch_size in batch_sizes}
    tokens = {}
    for _ in range(repeats):
        for batch_size in batch_sizes:
            started = time.perf_counter()
            samples = generation.generate(model, tokenizer, prompt_ids, sampling, batch_size)
            times[batch_size].append(time.perf_counter() - started)
            tokens[batch_size] = sum(s.length for group in samples for s in group)
    return {b: (statistics.median(times[b]), tokens[b]) for b in batch_sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x2,256x4", help="models built from a config: WIDTHxLAYERS,...")
    parser.add_argument("--model", help="a saved model directory instead of --sizes")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt (1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the batched run's batch (grpo-cli eval's default)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu, {torch.get_num_threads()} threads"
    )
    # Operands up to 99: prompts of 4 to 6 characters, so batches need padding as real ones do.
    prompts = [row["question"] for row in addition_task(args.prompts, seed=0, max_operand=99)]
    sampling = generation.Sampling(num_samples=args.samples, max_new_tokens=args.max_new_tokens, seed=0)
    count = len(prompts) * args.samples

    print(
        f"{count} completions ({len(prompts)} prompts x {args.samples}), up to {args.max_new_tokens} new tokens, "
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{'greedy' if sampling.greedy else 'sampled'}; {device}; torch {torch.__version__}; {platform.machine()}; "
    )
    print(f"load average at start {load}; median of {args.repeats} runs")
    print()
    print("| model | generation | batch | seconds | completions/s | tokens/s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in [args.model] if args.model else args.sizes.split(","):
        model, tokenizer = load(name) if args.model else build(name)
        model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        parameters = sum(p.numel() for p in model.parameters())
        label = name if args.model else f"{name} ({parameters / 1e6:.2f}M params)"
        prompt_ids = prompting.tokenize_prompts(tokenizer, prompts)
        timings = measure(model, tokenizer, prompt_ids, sampling, [1, args.batch_size], args.repeats)
        (single_s, single_tokens), (batched_s, batched_tokens) = timings[1], timings[args.batch_size]
        rows = [
            ("one at a time", 1, single_s, single_tokens, 1.0),
            ("batched", args.batch_size, batched_s, batched_tokens, single_s / batched_s),
        ]
        for mode, batch, seconds, tokens, speedup in rows:
            print(
                f"| {label} | {mode} | {batch} | {seconds:.2f} | {count / seconds:.1f} | {tokens / seconds:.0f} "
                f"| {speedup:.1f}x |"
            )


if __name__ == "__main__":
    main()
