"""Which models a command loads: a run directory's tuned model and the model it started from, or a saved model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grpo_cli.errors import UserError
from grpo_cli.recipe import ModelSection, Recipe
from grpo_cli.run_dir import last_checkpoint
from grpo_cli.run_files import RECIPE_FILE, read_recipe, read_summary

# A Hub repository id, `name` or `org/name`, as the Hub allows (models and datasets alike).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelSource:
    """A model to load: where it is and how (`models.load_source` loads it)."""

    # A peft adapter on `base`, a saved model directory, or a recipe's model section (Hub id, dir or from_config).
    kind: Literal["adapter", "model", "recipe"]
    path: Path | None = None  # the adapter or model directory
    spec: ModelSection | None = None  # kind "recipe"
    seed: int = 0  # kind "recipe" with from_config: the seed that built the initial weights
    base: ModelSource | None = (
        None  # what an adapter adapts; for a model dir, where a missing tokenizer comes from
    )
    run_dir: Path | None = None  # the training run it came from

    def describe(self) -> str:
        if self.kind == "adapter":
            return f"adapter {self.path} on {self.base.describe()}"
        if self.kind == "model":
            return str(self.path)
        if self.spec.from_config is not None:
            return f"the recipe's model.from_config (seed {self.seed})"
        return self.spec.name_or_path

    def identity(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind}
        if self.path is not None:
            info["path"] = str(self.path)
        if self.kind == "recipe":
            info["model"] = self.spec.model_dump(mode="json", exclude_none=True)
            if self.spec.from_config is not None:
                info["seed"] = self.seed
        if self.kind == "adapter":
            info["base"] = self.base.identity()
        if self.run_dir is not None:
            info["run_dir"] = str(self.run_dir)
            info["run_summary"] = read_summary(self.run_dir)
        return info


def run_root(directory: Path) -> Path:
    """The run a directory belongs to: its parent for a checkpoint-N inside a run, else itself."""
    directory = Path(directory)
    if directory.name.startswith("checkpoint-") and (directory.parent / RECIPE_FILE).is_file():
        return directory.parent
    return directory


def run_base(root: Path, recipe_base: ModelSource) -> ModelSource:
    """The model a run started from: its base_model/, else its recipe's model, else the given recipe's."""
    if (root / "base_model" / "config.json").is_file():
        return ModelSource("model", path=(root / "base_model").resolve(), base=recipe_base)
    run_recipe = read_recipe(root) or {}
    try:
        spec = ModelSection.model_validate(run_recipe["model"])
        return ModelSource("recipe", spec=spec, seed=int(run_recipe.get("seed", recipe_base.seed)))
    except (KeyError, TypeError, ValueError):
        return recipe_base


def resolve_models(
    recipe: Recipe, adapter: Path | None, model: Path | None
) -> tuple[ModelSource | None, ModelSource]:
    """(the tuned model or None, the base model) for `--adapter RUN_DIR`, `--model PATH` or neither."""
    recipe_base = ModelSource("recipe", spec=recipe.model, seed=recipe.seed)
    if adapter is not None and model is not None:
        raise UserError("--adapter and --model both name a model to evaluate: give one")
    if model is not None:
        if not model.is_dir():
            raise UserError(f"--model {model}: no such directory; give a model saved with save_pretrained")
        if (model / "adapter_config.json").is_file():
            raise UserError(f"--model {model} holds a peft adapter: pass it as --adapter {model}")
        if not (model / "config.json").is_file():
            raise UserError(
                f"--model {model} has no config.json: give a directory saved with save_pretrained"
            )
        return ModelSource("model", path=model.resolve(), base=recipe_base), recipe_base
    if adapter is None:
        return None, recipe_base
    if not adapter.is_dir():
        raise UserError(
            f"--adapter {adapter}: no such directory; give the output directory of a training run"
        )
    root = run_root(adapter)
    base = run_base(root, recipe_base)
    if (adapter / "adapter_config.json").is_file():
        kind = "adapter"
    elif (adapter / "config.json").is_file():
        kind = "model"
    else:
        checkpoint = last_checkpoint(adapter)
        hint = (
            f"; is the run unfinished? evaluate its last checkpoint with --adapter {checkpoint}"
            if checkpoint
            else "; give the output directory of a finished training run"
        )
        raise UserError(
            f"--adapter {adapter} holds neither a peft adapter (adapter_config.json) nor a model (config.json){hint}"
        )
    return ModelSource(kind, path=adapter.resolve(), base=base, run_dir=root.resolve()), base
