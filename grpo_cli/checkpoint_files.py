"""Whether `--resume` can load a checkpoint: every file it reads is there and loads.

A `checkpoint-N/` is renamed into place only once whole (`run_dir`), but a disk error, a copy cut short or a hand
edit can still damage it afterwards; `--resume` checks it here before trusting it, and falls back to the one before
(`run_dir.usable_checkpoint`). Each file is checked as its loader reads it, without reading tensor data, so that a
model or optimizer state of many GB costs no more than its header:

- safetensors: `safe_open` parses the header and refuses a file shorter or longer than the header says;
- torch.save files (optimizer.pt, scheduler.pt, rng_state.pth, ...): a zip whose central directory (at the end:
  truncation loses it) is whole, and whose pickle loads under `weights_only=True` (memory-mapped);
- the JSON files the loaders read (adapter_config.json, config.json, ...): they parse to a mapping.

Bytes damaged inside a tensor's data cannot be seen: neither format keeps a checksum.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from grpo_cli.compat.transformers import rng_state_allowlist
from grpo_cli.errors import describe

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# What the trainer restores besides the weights (absent only with trainer.save_only_model).
TRAINING_STATE = ("optimizer.pt", "scheduler.pt")
RNG_STATE = (
    "rng_state*.pth"  # rng_state.pth, or rng_state_<process>.pth for each process of a multi-process run
)
LOADED_JSON = (
    "adapter_config.json",
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "token_count.json",  # SFT and reward runs: resume_state.TokenCount
)
NEVER_LOADED = frozenset(
    {"training_args.bin"}
)  # a pickle of TrainingArguments, written for humans, not resumed


def checkpoint_problems(
    checkpoint: Path, *, parts: tuple[str, ...] = (), model_only: bool = False
) -> list[str]:
    """What keeps `checkpoint` from being resumed, one short phrase per file ("optimizer.pt is empty"); [] when
    every file `--resume` loads is there and loads. `parts`: subfolders the algorithm adds, each a model of its own
    (PPO's `value_model`); `model_only`: the run saved no optimizer, schedule or random state."""
    problems = _model_problems(checkpoint, "")
    for part in parts:
        if not (checkpoint / part).is_dir():
            problems.append(f"{part}/ is missing")
        else:
            problems += _model_problems(checkpoint / part, f"{part}/")
    if not model_only:
        problems += [f"{name} is missing" for name in TRAINING_STATE if not (checkpoint / name).is_file()]
        if not any(checkpoint.glob(RNG_STATE)):
            problems.append("rng_state.pth is missing")
    for path in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        problems += _torch_file_problems(path, path.name)
    return problems


def _model_problems(directory: Path, prefix: str) -> list[str]:
    """A model or adapter folder: its config and weights are there and load."""
    adapter = [n for n in ADAPTER_WEIGHTS if (directory / n).is_file()]
    full = [n for n in FULL_WEIGHTS if (directory / n).is_file()]
    if not adapter and not full:
        expected = ADAPTER_WEIGHTS[0] if (directory / "adapter_config.json").exists() else FULL_WEIGHTS[0]
        return [f"{prefix}{expected} is missing"]
    config = "adapter_config.json" if adapter else "config.json"
    problems = [] if (directory / config).is_file() else [f"{prefix}{config} is missing"]
    for name in LOADED_JSON:
        if (directory / name).is_file():
            problems += _json_problems(directory / name, prefix + name)
    weights = [directory / n for n in adapter + full if not n.endswith(".json")]
    index = directory / "model.safetensors.index.json"
    if index.is_file() and not problems:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        problems += [f"{prefix}{s} is missing (named in {index.name})" for s in missing]
        weights += [directory / s for s in shards if s not in missing]
    for path in weights:
        if path.suffix == ".safetensors":
            problems += _safetensors_problems(path, prefix + path.name)
        elif path.name not in NEVER_LOADED:
            problems += _torch_file_problems(path, prefix + path.name)
    return problems


def _json_problems(path: Path, shown: str) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{shown} is {'empty' if _empty(path) else 'damaged'} ({describe(err)})"]
    return [] if isinstance(data, dict) else [f"{shown} is damaged (not a JSON mapping)"]


def _safetensors_problems(path: Path, shown: str) -> list[str]:
    from safetensors import safe_open

    if _empty(path):
        return [f"{shown} is empty"]
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = len(list(handle.keys()))
    except Exception as err:  # SafetensorError and OSError; any failure to open is what resuming would hit
        return [f"{shown} is damaged: truncated or not safetensors ({_short(err)})"]
    return [] if tensors else [f"{shown} holds no tensors"]


def _torch_file_problems(path: Path, shown: str) -> list[str]:
    import pickle
    import zipfile

    import torch

    if path.name in NEVER_LOADED:
        return []
    if _empty(path):
        return [f"{shown} is empty"]
    if not zipfile.is_zipfile(path):
        return [f"{shown} is damaged: truncated or not a torch.save file"]
    try:
        # the numpy random state in rng_state*.pth: loaded, as by the Trainer, with numpy's types allowed
        allowed = rng_state_allowlist() if path.match(RNG_STATE) else contextlib.nullcontext()
        with allowed:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        # torch's message is a paragraph on weights_only; what matters is that the file holds more than tensors.
        return [
            f"{shown} holds objects torch will not load with weights_only=True (not a file grpo-cli wrote)"
        ]
    except Exception as err:  # a damaged archive member, a bad record: whatever resuming would hit
        return [f"{shown} is damaged ({_short(err)})"]
    return []


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _short(err: BaseException, limit: int = 100) -> str:
    text = describe(err)
    return text if len(text) <= limit else text[: limit - 3] + "..."
