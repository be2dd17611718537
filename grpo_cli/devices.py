"""The machine models run on: the device eval, generate and export put models on, the dtype weights load in, and
the trainer settings that depend on whether there is a GPU. torch is imported when asked, not before."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> str:
    """Where eval, generate, export and `rewards test` put models: the GPU when there is one (training's trainer
    places its own)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    """The GPU's name when models go to it, else "cpu" (what eval.json records)."""
    import torch

    return torch.cuda.get_device_name() if default_device() == "cuda" else "cpu"


def torch_dtype(name: str) -> torch.dtype:
    """The dtype to load weights in: `auto` is bfloat16 on a GPU that supports it, else float32."""
    import torch

    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, name)


def hardware_defaults(trainer_args: dict) -> dict:
    """Trainer settings that depend on the machine, unless the recipe set them.

    Precision: bf16 where the GPU supports it, else fp32 (TRL defaults to bf16, which fails on a CPU).
    Pinned memory only helps with a GPU, and warns without one.
    Without a GPU, `use_cpu`: with several processes that is what makes them DDP over gloo.
    """
    import torch

    cuda = torch.cuda.is_available()
    # use_cpu also makes several CPU processes run DDP over gloo instead of training independently.
    defaults = {"dataloader_pin_memory": cuda, "use_cpu": not cuda}
    if "bf16" not in trainer_args and "fp16" not in trainer_args:
        defaults.update(bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False)
    return {k: v for k, v in defaults.items() if k not in trainer_args}
