"""Recipes: YAML -> a strict, typed `Recipe`.

Loading goes: find the file (a path, or the name of a shipped recipe) -> `load_yaml` (UTF-8, duplicate keys
refused, `1e-5` read as a float) -> make its relative paths absolute against its own directory -> merge the chain
of `extends:` parents -> apply `KEY=VALUE` overrides (`parse_assignment`) -> validate against the schema (every
unknown key is an error naming its dotted path and the closest valid key) -> check `trainer:` against the
installed TRL config's fields. The resolved recipe saved in a run directory holds absolute paths and means the
same from anywhere.

Reading the files (finding, YAML, `extends:`, paths, overrides) is `grpo_cli.recipe_files`; this module is the
schema and what turns the merged mapping into a `Recipe`. Deeper checks that need the dataset or the reward
plugins live in `grpo_cli.validation`.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from grpo_cli import recipe_rules, trainer_fields
from grpo_cli.algorithms.table import NAMES
from grpo_cli.errors import ConfigError, did_you_mean
from grpo_cli.recipe_files import load_data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Chat templates TRL 1.12 ships with a tool-call parser (`trl.chat_template_utils.<name>_chat_template`): what
# `tool_template:` puts on a tokenizer TRL does not recognise, and `model.from_config.chat_template:` on a new one.
_TEMPLATE_NAMES = """qwen2_5 qwen3 qwen3_instruct_2507 qwen3_5_nothink qwen3_5_think qwen3_6 qwen3_8 llama3_1 llama3_2
glm4moe gptoss gemma4 deepseek_r1_distill lfm2_2_5 nemotron_3_nano"""
TOOL_TEMPLATES = tuple(_TEMPLATE_NAMES.split())


class FromConfig(_Strict):
    """Build a small randomly initialised model from a transformers config (no download)."""

    model_type: str = "qwen2"
    vocabulary: str = Field(min_length=1, description="the characters of the character-level tokenizer")
    # Upper bounds far above any model built from scratch here, far below what overflows memory or an int32.
    hidden_size: int = Field(64, gt=0, le=65536)
    num_hidden_layers: int = Field(2, gt=0, le=1024)
    num_attention_heads: int = Field(4, gt=0, le=1024)
    num_key_value_heads: int | None = Field(None, gt=0, le=1024)
    intermediate_size: int | None = Field(None, gt=0, le=1 << 20)
    max_position_embeddings: int = Field(512, gt=0, le=1 << 20)
    tie_word_embeddings: bool = True
    tokens: list[str] = Field(default_factory=list, description="whole strings made one token each")
    eos_token: str | None = Field(None, description="one of `tokens` ending a reply (default <eos>)")
    chat_template: Literal[TOOL_TEMPLATES] | None = None  # type: ignore[valid-type]  # a TRL template
    extra: dict[str, Any] = Field(default_factory=dict, description="other config keyword arguments")

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must divide hidden_size ({self.hidden_size})"
            )
        kv_heads = self.num_key_value_heads
        if kv_heads is not None and self.num_attention_heads % kv_heads:
            raise ValueError(
                f"num_key_value_heads ({kv_heads}) must divide num_attention_heads ({self.num_attention_heads})"
            )
        return self


MAX_NAME_PART = 255  # bytes in one path component: what file systems allow (and far more than a Hub id has)


def _usable_name(value: str | None) -> str | None:
    """A name or path a file system (or the Hub) can take: no NUL byte, no part over MAX_NAME_PART bytes."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains a NUL byte")
    if isinstance(value, str) and any(len(part.encode()) > MAX_NAME_PART for part in value.split("/")):
        raise ValueError(
            f"has a part longer than {MAX_NAME_PART} bytes, which no file, directory or Hub id can have"
        )
    return value


class ModelSection(_Strict):
    name_or_path: str | None = Field(None, min_length=1)
    from_config: FromConfig | None = None
    run: str | None = Field(
        None, min_length=1, description="a previous run's directory: start from the model it trained"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    revision: str | None = None

    _names = field_validator("name_or_path", "revision", "run")(_usable_name)

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.name_or_path, self.from_config, self.run)) != 1:
            raise ValueError(
                "give exactly one of model.name_or_path (Hub id or local dir), model.from_config or "
                "model.run (a previous run's directory)"
            )
        return self


class LoraSection(_Strict):
    r: int = Field(16, gt=0, le=65536)  # a rank above any layer's width is no low-rank adapter
    alpha: float = Field(32, gt=0, le=1e6, allow_inf_nan=False)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _some_modules(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError(
                "an empty list adapts nothing; name modules (e.g. [q_proj, v_proj]) or 'all-linear'"
            )
        return value


class GenerateSection(_Strict):
    """A synthetic task dataset made in code (see `grpo_cli.tasks.TASKS`)."""

    task: str
    size: int = Field(1000, gt=0, le=1_000_000)
    seed: int = Field(0, ge=0, le=trainer_fields.SEED_MAX)
    options: dict[str, Any] = Field(default_factory=dict)


class DatasetSection(_Strict):
    source: str | None = Field(None, min_length=1)
    generate: GenerateSection | None = None
    config: str | None = None
    split: str = "train"
    prompt: str | None = Field(None, min_length=1)
    completion: str | None = Field(
        None, min_length=1, description="SFT: a template over columns for the target, e.g. '{answer}'"
    )
    system_prompt: str | None = None
    chat_template: bool | None = None
    limit: int | None = Field(None, gt=0)
    eval_split: str | None = None
    eval_ratio: float | None = Field(None, gt=0, lt=1)
    eval_size: int | None = Field(None, gt=0)

    _paths = field_validator("source", "eval_split", "split", "config")(_usable_name)

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
    name: str = Field(min_length=1)
    weight: float = Field(1.0, allow_inf_nan=False)
    args: dict[str, Any] = Field(default_factory=dict)
    on_error: Literal["fail", "zero", "skip"] = "fail"
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    # `process`: called in a worker process of its own (grpo_cli.reward_workers), where a timeout kills the call
    # and a crash costs that call only.
    isolation: Literal["in_process", "process"] = "in_process"

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        _usable_name(name)
        if name.strip() == "model:":
            raise ValueError("model: needs a Hub id or a local directory, e.g. model:./my-reward-model")
        return name


class ToolEntry(_Strict):
    """A tool the model may call while it generates (`tools:`): named like a reward, `args` bound."""

    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(
        30.0, gt=0, allow_inf_nan=False, description="seconds a call may take; then the model gets an error"
    )

    _names = field_validator("name")(_usable_name)


class EnvironmentEntry(ToolEntry):
    """A factory of environments (`environment:`): one instance per rollout, its public methods the tools.

    `on_error` says what a `reset()` that raises does: stop the run (fail), or let the rollout go on with every
    tool answering the error and `get_reward` scoring it 0 (zero) or leaving it out (skip)."""

    on_error: Literal["fail", "zero", "skip"] = "fail"


class EvalSection(_Strict):
    """Held-out evaluation: defaults for `grpo-cli eval` (its command-line options win) and, with `every`, the
    evaluation during training (`grpo_cli.eval_during_training`) and its reward-hacking alarm."""

    rewards: list[RewardEntry] = Field(
        default_factory=list,
        description="eval-only rewards, reported beside the training rewards (e.g. a task metric)",
    )
    num_samples: int = Field(1, gt=0, description="completions per prompt; 1 is greedy decoding")
    limit: int | None = Field(None, gt=0, description="evaluate only the first N held-out prompts")
    max_new_tokens: int = Field(
        256, gt=0, description="SFT runs: the generation limit (GRPO and PPO use their trainer's)"
    )
    every: int | None = Field(
        None, ge=1, description="evaluate during training every N steps (and at the end); unset: never"
    )
    alarm_window: int = Field(
        3, ge=2, description="the reward-hacking alarm looks at the last K evaluations (K >= 2)"
    )
    alarm_drop: float = Field(
        0.05,
        gt=0,
        allow_inf_nan=False,
        description="the alarm trips when the held-out metric falls by more than this over the window "
        "while the training reward rises",
    )
    stop_when_diverging: bool = Field(
        False, description="stop training (with a checkpoint) when the alarm trips"
    )


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
    main_process_port: int | None = Field(None, ge=1, le=65535)

    _paths = field_validator("config_file")(_usable_name)

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
    algorithm: Literal[NAMES] = "grpo"  # type: ignore[valid-type]  (the algorithm table's names)
    seed: int = Field(42, ge=0, le=trainer_fields.SEED_MAX, description="numpy's seeds: 0 .. 2**32 - 1")
    output_dir: str | None = Field(None, min_length=1)
    model: ModelSection
    lora: LoraSection | None = None
    dataset: DatasetSection
    rewards: list[RewardEntry] = Field(default_factory=list)
    tools: list[ToolEntry] = Field(default_factory=list)
    environment: EnvironmentEntry | dict[str, EnvironmentEntry] | None = None
    tool_template: Literal[TOOL_TEMPLATES] | None = None  # type: ignore[valid-type]
    trainer: dict[str, Any] = Field(default_factory=dict)
    eval: EvalSection | None = None
    distributed: DistributedSection = Field(default_factory=DistributedSection)

    _paths = field_validator("output_dir")(_usable_name)

    # Where the recipe came from; not part of the YAML.
    _path: Path | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---- validation ----


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


def _user_location(loc: tuple, data: Any) -> tuple:
    """The parts of a pydantic error location that are the user's keys and list indices, found by walking `data`:
    pydantic adds steps of its own ("function-after[...]", "list[str]"), and a user's key may look like one
    (`x[0]`)."""
    kept = []
    for part in loc:
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        ):
            data = data[part]
        else:
            continue
        kept.append(part)
    return tuple(kept)


def _format_error(err: dict, data: Any) -> str:
    loc = _user_location(err["loc"], data)
    if err["type"] == "missing" and err["loc"] and isinstance(err["loc"][-1], str):
        loc = (*_user_location(err["loc"][:-1], data), err["loc"][-1])  # the missing key is not in the data
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    if err["type"] == "extra_forbidden" and loc:
        schema = _schema_at(loc)
        valid = list(schema.model_fields) if schema else []
        hint = did_you_mean(str(loc[-1]), valid)
        listing = f"; valid keys: {', '.join(valid)}" if valid and not hint else ""
        if "[" in str(loc[-1]):  # `rewards[0].weight=2` on the command line: a key, not an index
            listing += "; KEY=VALUE cannot index into a list: edit the list in the recipe"
        return f"{dotted}: unknown key{hint}{listing}"
    if err["type"] == "missing":
        return f"{dotted}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input", {})
    if err["type"] != "literal_error" and not isinstance(given, dict | list):
        shown = repr(given)
        message += f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    return f"{dotted}: {message}" if dotted else message


@functools.cache
def _field_adapter(name: str) -> TypeAdapter:
    field = Recipe.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def _section_problems(data: dict) -> tuple[dict[str, Any], list[str]]:
    """Each top-level section validated on its own: (the good ones, every schema problem)."""
    good, problems = {}, []
    for name, value in data.items():
        field = Recipe.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            continue
        with contextlib.suppress(ValidationError):
            good[name] = _field_adapter(name).validate_python(value)
    try:
        Recipe.model_validate(data)
    except ValidationError as err:
        problems = list(dict.fromkeys(_format_error(e, data) for e in err.errors()))
    return good, problems


def check_schema(data: Any) -> tuple[Recipe, list[str], set[str]]:
    """Validate a merged recipe mapping, collecting every problem: (recipe, problems, broken sections).

    When a section is wrong the recipe still comes back, with that section at its default (or None), so that
    the checks of the other sections can run too: `validate` lists every problem at once. The names of the
    sections that could not be read are in `broken`; checks that need them must skip.
    """
    if not isinstance(data, dict):
        return (
            Recipe.model_construct(),
            [f"a recipe is a mapping of keys to values, not {type(data).__name__}"],
            {"*"},
        )
    good, problems = _section_problems(data)
    broken = {name for name in Recipe.model_fields if name in data and name not in good}
    broken |= {name for name in ("model", "dataset") if name not in data}
    recipe = Recipe.model_construct(**{k: v for k, v in good.items()})
    for name, field in Recipe.model_fields.items():
        if name not in good:
            setattr(
                recipe, name, None if field.is_required() else field.get_default(call_default_factory=True)
            )
    if "algorithm" not in broken and "trainer" not in broken:
        recipe.trainer, trainer_problems = trainer_fields.check_section(recipe.algorithm, recipe.trainer)
        problems += trainer_problems + trainer_fields.check_ranges(recipe.trainer)
        if trainer_problems:
            broken.add("trainer")  # a value of the wrong type: the batch rules cannot be checked
    if "algorithm" not in broken:
        problems += recipe_rules.algorithm_problems(recipe, data, rewards_read="rewards" not in broken)
    return recipe, problems, broken


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    """Validate a merged recipe mapping; every problem goes into one ConfigError."""
    checked, problems, _broken = check_schema(data)
    if problems:
        raise ConfigError(source, problems)
    recipe = Recipe.model_validate(data)
    recipe.trainer = checked.trainer  # coerced to the types TRL declares
    return recipe


def finish(recipe: Recipe, path: Path) -> Recipe:
    """A parsed recipe, told where it came from (and given its default output_dir, runs/<file stem>)."""
    recipe._path = path
    if recipe.model is not None and recipe.model.run is not None:
        # Like output_dir (which it names), a run is where the user runs the command; saved absolute.
        recipe.model.run = str(Path(recipe.model.run).expanduser().resolve())
    if recipe.output_dir is None:
        recipe.output_dir = str(Path("runs") / path.stem)
    return recipe


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path, data = load_data(name_or_path, overrides)
    return finish(parse_recipe(data, source=path.name), path)
