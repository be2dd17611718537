"""`lora.target_modules` against the model's module names: at train with the model loaded, and at validate from the
model's config alone (built on the meta device: no weights read, no memory taken).

peft's matching: a string is a regular expression matched against whole module names, a list holds name suffixes.
"""

from __future__ import annotations

import re
from pathlib import Path

from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.errors import UserError, did_you_mean
from grpo_cli.model_sources import HUB_ID

# The layer types peft puts LoRA on: what a target list should name (containers, norms and dropouts are no targets).
LORA_LAYERS = frozenset({"Linear", "Conv1D", "Conv1d", "Conv2d", "Conv3d", "Embedding", "MultiheadAttention"})
SHOWN = 12  # target names listed in a message, at most


def problems(targets: str | list[str], modules: dict[str, str], model: str = "the model") -> list[str]:
    """One line for each entry of `targets` that matches no module; `modules` is {module name: class name}."""
    names = [name for name in modules if name]
    layers = sorted({name.rsplit(".", 1)[-1] for name in names if modules[name] in LORA_LAYERS})
    leaves = layers or sorted({name.rsplit(".", 1)[-1] for name in names})
    shown = ", ".join(leaves[:SHOWN]) + (f", ... ({len(leaves) - SHOWN} more)" if len(leaves) > SHOWN else "")
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as err:
            return [f"lora.target_modules: {targets!r} is not a regular expression: {err}"]
        if not any(pattern.fullmatch(name) for name in names):
            return [f"lora.target_modules: {targets!r} matches no module of {model}; its modules: {shown}"]
        return []
    return [
        f"lora.target_modules: {target!r} matches no module of {model}{did_you_mean(target, leaves)}; "
        f"its modules: {shown}"
        for target in targets
        if not any(name == target or name.endswith(f".{target}") for name in names)
    ]


def from_config(recipe) -> tuple[str, dict[str, str]] | None:
    """(what the model is, {module name: class name}) of the recipe's model, from its config on the meta device;
    None when the config cannot be read offline: a Hub id not in the local cache, `model.run` (its run may not be
    trained yet), or an architecture of custom code (validate runs no remote code)."""
    spec = recipe.model
    if recipe.lora is None or recipe.lora.target_modules == "all-linear" or spec.trust_remote_code:
        return None
    config, label = _config(spec)
    if config is None:
        return None
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    scores = ALGORITHMS[recipe.algorithm].makes == "reward model"
    if scores:
        config.num_labels = 1
    auto = AutoModelForSequenceClassification if scores else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except (
        Exception
    ):  # an architecture this transformers cannot build: train says so, with the weights in hand
        return None
    return label, {name: type(module).__name__ for name, module in model.named_modules()}


def _config(spec):
    if spec.from_config is not None:
        from grpo_cli.models import config_from_spec

        try:
            return config_from_spec(
                spec.from_config
            ), f"the {spec.from_config.model_type} model built from a config"
        except UserError:
            return None, None  # the model checks say why
    if spec.name_or_path is None:
        return None, None
    path = Path(spec.name_or_path).expanduser()
    local = (path / "config.json").is_file()
    if not local and (path.exists() or not HUB_ID.match(spec.name_or_path)):
        return None, None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            str(path) if local else spec.name_or_path,
            revision=None if local else spec.revision,
            local_files_only=True,
            trust_remote_code=False,
        )
    except Exception:  # not cached, unreadable, or custom code: train loads it and says what is wrong
        return None, None
    return config, f"{spec.name_or_path} ({config.model_type}, from its config)"
