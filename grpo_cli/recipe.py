"""Recipes: YAML -> a strict, typed `Recipe`.

Loading goes: find the file (a path, or the name of a shipped recipe) -> `yaml.safe_load` -> merge the chain of
`extends:` parents -> apply `KEY=VALUE` overrides -> validate against the schema (every unknown key is an error
naming its dotted path and the closest valid key) -> check `trainer:` against the installed TRL config's fields
-> make relative paths absolute, so the resolved recipe saved in a run directory works from anywhere.

Deeper checks that need the dataset or the reward plugins live in `grpo_cli.validation`.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grpo_cli import trainer_fields
from grpo_cli._paths import RECIPES_DIR
from grpo_cli.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FromConfig(_Strict):
    """Build a small randomly initialised model from a transformers config (no download)."""

    model_type: str = "qwen2"
    vocabulary: str = Field(description="the characters of the character-level tokenizer")
    hidden_size: int = Field(64, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    extra: dict[str, Any] = Field(default_factory=dict, description="other config keyword arguments")


class ModelSection(_Strict):
    name_or_path: str | None = None
    from_config: FromConfig | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    revision: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name_or_path is None) == (self.from_config is None):
            raise ValueError(
                "give exactly one of model.name_or_path (Hub id or local dir) or model.from_config"
            )
        return self


class LoraSection(_Strict):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"


class GenerateSection(_Strict):
    """A synthetic task dataset made in code (see `grpo_cli.data.TASKS`)."""

    task: str
    size: int = Field(1000, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class DatasetSection(_Strict):
    source: str | None = None
    generate: GenerateSection | None = None
    config: str | None = None
    split: str = "train"
    prompt: str | None = None
    system_prompt: str | None = None
    chat_template: bool | None = None
    limit: int | None = Field(None, gt=0)
    eval_split: str | None = None
    eval_ratio: float | None = Field(None, gt=0, lt=1)
    eval_size: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if (self.source is None) == (self.generate is None):
            raise ValueError("give exactly one of dataset.source (Hub id or local file) or dataset.generate")
        if self.generate is not None and self.eval_split is not None:
            raise ValueError("a generated dataset has no splits: hold rows out with eval_size or eval_ratio")
        held_out = [self.eval_split, self.eval_ratio, self.eval_size]
        if sum(x is not None for x in held_out) > 1:
            raise ValueError("give at most one of dataset.eval_split, dataset.eval_ratio, dataset.eval_size")
        return self


class RewardEntry(_Strict):
    name: str
    weight: float = 1.0
    args: dict[str, Any] = Field(default_factory=dict)
    on_error: Literal["fail", "zero", "skip"] = "fail"
    timeout: float | None = Field(None, gt=0)


class EvalSection(_Strict):
    """Defaults for `grpo-cli eval` (its command-line options win)."""

    rewards: list[RewardEntry] = Field(
        default_factory=list,
        description="eval-only rewards, reported beside the training rewards (e.g. a task metric)",
    )
    num_samples: int = Field(1, gt=0, description="completions per prompt; 1 is greedy decoding")
    limit: int | None = Field(None, gt=0, description="evaluate only the first N held-out prompts")


class DistributedSection(_Strict):
    """Several processes (and machines) through accelerate's launcher; `train --num-processes N` wins."""

    num_processes: int = Field(1, gt=0, description="processes on this machine (one per GPU)")
    backend: Literal["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp"] = "ddp"
    config_file: str | None = Field(
        None, description="an accelerate config file, instead of a backend preset"
    )
    num_machines: int = Field(1, gt=0)
    machine_rank: int = Field(0, ge=0)
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.config_file is not None and self.backend != "ddp":
            raise ValueError("give distributed.backend or distributed.config_file, not both")
        if self.num_machines > 1 and self.main_process_ip is None:
            raise ValueError(
                "several machines need distributed.main_process_ip (the address of machine rank 0)"
            )
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"distributed.machine_rank must be below num_machines ({self.num_machines})")
        return self


class Recipe(_Strict):
    algorithm: Literal["grpo", "ppo"] = "grpo"
    seed: int = 42
    output_dir: str | None = None
    model: ModelSection
    lora: LoraSection | None = None
    dataset: DatasetSection
    rewards: list[RewardEntry] = Field(default_factory=list)
    trainer: dict[str, Any] = Field(default_factory=dict)
    eval: EvalSection | None = None
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    # Where the recipe came from; not part of the YAML.
    _path: Path | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---- finding and reading files ----


def shipped_recipes() -> dict[str, Path]:
    """Shipped recipe names (file stems) -> paths."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    shipped = shipped_recipes()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        raise UserError(f"recipe file not found: {name_or_path}")
    raise UserError(
        f"no recipe file or shipped recipe named {name_or_path!r}{_did_you_mean(name_or_path, shipped)}; "
        f"shipped: {', '.join(shipped)} (see `grpo-cli recipes ls`)"
    )


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{path}{where}: invalid YAML: {problem}") from err
    except OSError as err:
        raise UserError(f"cannot read recipe {path}: {err.strerror}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values, not a {type(data).__name__}")
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`; mappings merge key by key, everything else (lists included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_with_parents(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise UserError(f"recipe extends itself in a loop: {chain}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    _absolutize_paths(data, path.parent)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends must be a recipe path or shipped recipe name, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file() and "/" not in parent and Path(parent).stem in shipped_recipes():
        parent_path = shipped_recipes()[Path(parent).stem]  # a shipped recipe by name
    if not parent_path.is_file():
        raise UserError(f"{path}: extends {parent!r}, but {parent_path} does not exist")
    return deep_merge(_load_with_parents(parent_path.resolve(), (*seen, path)), data)


def _absolutize_paths(data: dict, base: Path) -> None:
    """Make the file paths a recipe names relative to its own directory absolute, in place."""

    def local(value: Any) -> str | None:
        if isinstance(value, str) and not value.startswith(("/", "~")):
            candidate = base / value
            if candidate.exists() or value.startswith("."):
                return str(candidate.resolve())
        return None

    dataset = data.get("dataset")
    if isinstance(dataset, dict) and (path := local(dataset.get("source"))):
        dataset["source"] = path
    model = data.get("model")
    if isinstance(model, dict) and (path := local(model.get("name_or_path"))):
        model["name_or_path"] = path
    dist = data.get("distributed")
    if isinstance(dist, dict) and (path := local(dist.get("config_file"))):
        dist["config_file"] = path
    evaluation = data.get("eval")
    eval_rewards = (evaluation.get("rewards") or []) if isinstance(evaluation, dict) else []
    for reward in [*(data.get("rewards") or []), *eval_rewards]:
        name = reward.get("name") if isinstance(reward, dict) else None
        if not isinstance(name, str):
            continue
        if ".py:" in name:
            file, attr = name.rsplit(":", 1)
            if not Path(file).expanduser().is_absolute():
                reward["name"] = f"{(base / file).resolve()}:{attr}"
        elif name.startswith("model:") and (path := local(name.removeprefix("model:"))):
            reward["name"] = f"model:{path}"
        elif (base / name).is_dir() and (path := local(name)):
            reward["name"] = path  # a reward model directory next to the recipe


# ---- overrides ----


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; each value is parsed as a YAML scalar (`1e-5` is a float here too)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(
                f"bad override {item!r}: write KEY=VALUE with a dotted key, e.g. trainer.max_steps=20"
            )
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        value = _yaml_float(value)
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, list) and parts[depth + 1].isdigit():
                raise UserError(f"bad override {item!r}: list items cannot be set by index; edit the recipe")
            elif not isinstance(child, dict):
                raise UserError(f"bad override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads `1e-5` (no dot) as a string; everyone means a number."""
    if isinstance(value, str):
        try:
            return (
                float(value)
                if any(c in value.lower() for c in "e.") and value[:1] in "+-.0123456789"
                else value
            )
        except ValueError:
            return value
    return value


# ---- validation ----


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `loc` (for listing valid keys)."""
    cls: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in candidates:
            inner = getattr(candidate, "__args__", (candidate,))
            found = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if found:
                cls = found
                break
        else:
            return None
    return cls


def _format_error(err: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        schema = _schema_at(loc)
        valid = list(schema.model_fields) if schema else []
        hint = _did_you_mean(str(loc[-1]), valid)
        listing = f"; valid keys: {', '.join(valid)}" if valid and not hint else ""
        return f"{dotted}: unknown key{hint}{listing}"
    if err["type"] == "missing":
        return f"{dotted}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] != "literal_error" and not isinstance(err.get("input", {}), dict | list):
        message += f", got {err['input']!r}"
    return f"{dotted}: {message}" if dotted else message


def check_trainer_section(algorithm: str, trainer: dict) -> tuple[dict, list[str]]:
    """Check `trainer:` keys and values against the installed TRL config class; return (coerced, problems)."""
    known = trainer_fields.fields(algorithm)
    managed = {
        "output_dir": "set output_dir at the top level of the recipe",
        "seed": "set seed at the top level of the recipe",
        "reward_weights": "give each reward a `weight` in the rewards list",
    }
    if algorithm == "ppo":  # PPOConfig fields that TRL's PPOTrainer never reads (its example script does)
        managed["reward_model_path"] = (
            "TRL's PPOTrainer ignores it; name a reward model in `rewards:` as `model:<Hub id or dir>`"
        )
        managed["sft_model_path"] = "TRL's PPOTrainer ignores it; set model.name_or_path"
    coerced, problems = {}, []
    config_name = "GRPOConfig" if algorithm == "grpo" else "PPOConfig"
    for key, value in trainer.items():
        if key in managed:
            problems.append(f"trainer.{key}: {managed[key]}")
        elif key not in known:
            hint = _did_you_mean(key, known)
            problems.append(f"trainer.{key}: not a field of TRL's {config_name}{hint}")
        else:
            coerced[key], problem = trainer_fields.check_value(known[key], value)
            if problem:
                problems.append(f"trainer.{key}: {problem}")
    return coerced, problems


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    """Validate a merged recipe mapping; every problem goes into one UserError."""
    problems: list[str] = []
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems = [_format_error(e) for e in err.errors()]
        recipe = None
    if recipe is not None:
        recipe.trainer, trainer_problems = check_trainer_section(recipe.algorithm, recipe.trainer)
        problems += trainer_problems
        if not recipe.rewards:
            problems.append(
                f"rewards: {recipe.algorithm.upper()} needs at least one reward (see `grpo-cli rewards ls`)"
            )
    if problems:
        raise UserError(_problems_message(source, problems), problems)
    return recipe


def _problems_message(source: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return f"{source}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = find_recipe(str(name_or_path))
    data = _load_with_parents(path)
    data = apply_overrides(data, overrides or [])
    recipe = parse_recipe(data, source=path.name)
    recipe._path = path
    if recipe.output_dir is None:
        recipe.output_dir = str(Path("runs") / path.stem)
    return recipe
