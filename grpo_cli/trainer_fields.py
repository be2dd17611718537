"""The fields of TRL's trainer configs (GRPOConfig, PPOConfig, SFTConfig, RewardConfig), available without importing torch or trl.

`validate` must stay fast, and importing trl takes seconds, so the fields are read from a table generated from the
installed classes (`trainer_fields.json`, next to this file). Regenerate it after changing the TRL pin with

    python -m grpo_cli.algorithms.fields_table

`tests/test_trainer_fields.py` fails when the table drifts from the installed TRL.

This module owns what grpo-cli knows about TRL's fields: their types and defaults (`value`), the keys a recipe
may set (`check_section`), the values TRL and transformers refuse in `__post_init__` or crash on once training
starts (`check_ranges`), and the names one algorithm uses for another's setting (`OTHER_NAMES`).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from grpo_cli.errors import did_you_mean


class Recipe(Protocol):
    """What these functions read of a `recipe.Recipe` (which imports this module: no import back)."""

    algorithm: str
    trainer: dict[str, Any]


TABLE_PATH = Path(__file__).with_name("trainer_fields.json")


@dataclass(frozen=True)
class TrainerField:
    name: str
    type: str  # a Python type expression over builtins, Literal and Any, e.g. "int | None"
    default: Any
    help: str


@cache
def fields(algorithm: str) -> dict[str, TrainerField]:
    table = json.loads(TABLE_PATH.read_text())
    return {name: TrainerField(name=name, **spec) for name, spec in table[algorithm]["fields"].items()}


@cache
def config_name(algorithm: str) -> str:
    """The name of the TRL config class the table was generated from, e.g. GRPOConfig."""
    return json.loads(TABLE_PATH.read_text())[algorithm]["class"].rsplit(".", 1)[-1]


@cache
def causal_lm_model_types() -> list[str]:
    """The `model_type`s transformers can build a causal LM from (for `model.from_config`)."""
    return json.loads(TABLE_PATH.read_text())["causal_lm_model_types"]


@cache
def _adapter(type_expr: str):
    from pydantic import TypeAdapter

    return TypeAdapter(eval(type_expr, {"Literal": Literal, "Any": Any}))  # the table's own expressions


def check_value(field: TrainerField, value: Any) -> tuple[Any, str | None]:
    """Return (the value coerced to the field's type, None) or (value, a short description of what is wrong)."""
    from pydantic import ValidationError

    type_expr = field.type
    if type_expr.startswith("Literal[") and type_expr.endswith("] | str"):
        # transformers types its enum-backed fields (lr_scheduler_type, optim, *_strategy) as "these names, or a
        # str", then refuses any other str in __post_init__: only the names are valid.
        type_expr = type_expr.removesuffix(" | str")
    if isinstance(value, bool) and "bool" not in type_expr.split(" | ") and "Any" not in type_expr:
        # pydantic reads true as 1: `max_steps: true` trained one step, `learning_rate: true` at 1.0.
        return value, f"expected {type_expr}, got {value!r} (true/false is no number)"
    if isinstance(value, int) and not isinstance(value, bool) and "float" in type_expr.split(" | "):
        # TRL types step counts `float` (below 1 they are a fraction of the run), and pydantic would turn an int
        # into a float: a whole number given stays one, so `save_steps: 3` is printed and saved as 3, not 3.0.
        type_expr = "int | " + type_expr
    try:
        return _adapter(type_expr).validate_python(value), None
    except ValidationError as err:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        return value, f"expected {type_expr}, got {shown} ({err.errors()[0]['msg'].lower()})"


# TRL fields that the recipe sets elsewhere.
MANAGED = {
    "output_dir": "set output_dir at the top level of the recipe",
    "seed": "set seed at the top level of the recipe",
    "reward_weights": "give each reward a `weight` in the rewards list",
}
# PPOConfig fields that TRL's PPOTrainer never reads (its example script does).
PPO_UNUSED = {
    "reward_model_path": "TRL's PPOTrainer ignores it; name a reward model in `rewards:` as `model:<Hub id or dir>`",
    "sft_model_path": "TRL's PPOTrainer ignores it; set model.name_or_path",
}
# RewardConfig fields a reward run cannot honour: grpo-cli renders and tokenizes the pairs itself (see
# algorithms/reward.py), before RewardTrainer would apply them.
REWARD_UNUSED = {
    "chat_template_path": "a reward run renders its pairs with the model's own chat template before TRL would set "
    "this one (it would train on one template and save another); save the template with the model's tokenizer "
    "(save_pretrained) and start from that directory",
}
# A setting of one algorithm -> what the other calls it, or why it has none (a recipe switched between them).
OTHER_NAMES = {
    "ppo": {
        "max_completion_length": "PPO's name for it is response_length",
        "num_generations": "PPO samples one completion per prompt; remove it",
        "beta": "PPO's KL coefficient is kl_coef",
        "generation_batch_size": "PPO samples per_device_train_batch_size x gradient_accumulation_steps prompts",
        "steps_per_generation": "PPO samples once per step; remove it",
    },
    "grpo": {
        "response_length": "GRPO's name for it is max_completion_length",
        "kl_coef": "GRPO's KL coefficient is beta",
        "num_ppo_epochs": "GRPO's passes over each generation are num_iterations",
    },
    "sft": {
        "max_completion_length": "SFT trains on whole sequences: max_length bounds prompt + completion",
        "num_generations": "SFT generates nothing; remove it",
        "beta": "SFT has no KL term; remove it",
    },
    "reward": {
        "num_generations": "a reward model generates nothing; remove it",
        "max_completion_length": "max_length bounds prompt + chosen (and prompt + rejected)",
    },
}

SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1
INT_MAX = 2**63 - 1


def value(recipe: Recipe, key: str) -> Any:
    """A trainer setting as TRL will see it: the recipe's value, else TRL's default."""
    if key in recipe.trainer:
        return recipe.trainer[key]
    return fields(recipe.algorithm)[key].default


def mapping(recipe: Recipe, key: str) -> dict:
    """A field that TRL types `dict | str | None` (the str holding JSON, e.g. generation_kwargs), as a dict."""
    from grpo_cli.errors import UserError

    found = value(recipe, key) or {}
    if isinstance(found, str):
        with contextlib.suppress(json.JSONDecodeError):
            found = json.loads(found)
    if not isinstance(found, dict):
        raise UserError(f"trainer.{key}: expected a mapping (or a JSON object), got {found!r}")
    return dict(found)


def chat_template_kwargs(recipe: Recipe) -> dict:
    """`trainer.chat_template_kwargs` where the algorithm's TRL config has the field (GRPO's: its trainer renders
    prompts, and what reward models read, with them), else {}."""
    return (
        mapping(recipe, "chat_template_kwargs") if "chat_template_kwargs" in fields(recipe.algorithm) else {}
    )


def check_section(algorithm: str, trainer: dict) -> tuple[dict, list[str]]:
    """Check `trainer:` keys and values against the installed TRL config class; return (coerced, problems)."""
    known = fields(algorithm)
    managed = {**MANAGED, **{"ppo": PPO_UNUSED, "reward": REWARD_UNUSED}.get(algorithm, {})}
    coerced, problems = {}, []
    for key, given in trainer.items():
        if not isinstance(key, str):
            problems.append(f"trainer.{key!r}: not a field name; keys are names like learning_rate")
        elif key in managed:
            problems.append(f"trainer.{key}: {managed[key]}")
        elif key not in known:
            other = OTHER_NAMES[algorithm].get(key)
            hint = f" ({other})" if other else did_you_mean(key, known)
            problems.append(f"trainer.{key}: not a field of TRL's {config_name(algorithm)}{hint}")
        else:
            coerced[key], problem = check_value(known[key], given)
            if problem:
                problems.append(f"trainer.{key}: {problem}")
    return coerced, problems


# What TRL and transformers refuse (or crash on once training starts): field -> (lowest, lowest allowed?, highest).
RANGES: dict[str, tuple[float, bool, float | None]] = {
    "learning_rate": (0, True, None),
    "max_length": (1, True, None),  # SFT and reward models: prompt + completion tokens
    # GRPO: the KL coefficient, the clipping range, sampling
    "beta": (0, True, None),
    "epsilon": (0, True, None),
    "epsilon_high": (0, True, None),
    "top_k": (0, True, None),  # 0: no top-k filtering
    "min_p": (0, True, 1),
    "repetition_penalty": (0, False, None),
    # PPO: KL penalty, clipping, the value loss's weight, GAE's discount and lambda
    "kl_coef": (0, True, None),
    "cliprange": (0, True, None),
    "cliprange_value": (0, True, None),
    "vf_coef": (0, True, None),
    "gamma": (0, True, 1),
    "lam": (0, True, 1),
    "per_device_train_batch_size": (1, True, None),
    "per_device_eval_batch_size": (1, True, None),
    "gradient_accumulation_steps": (1, True, None),
    "logging_steps": (0, False, None),
    "save_steps": (0, False, None),
    "eval_steps": (0, False, None),
    "temperature": (0, False, None),
    "max_completion_length": (1, True, None),
    "max_prompt_length": (1, True, None),
    "response_length": (1, True, None),
    "generation_batch_size": (1, True, None),
    "steps_per_generation": (1, True, None),
    "num_iterations": (1, True, None),
    "top_p": (0, False, 1),
    "warmup_steps": (0, True, None),
    "warmup_ratio": (0, True, 1),
    "num_train_epochs": (0, True, None),
    "dataloader_num_workers": (0, True, None),
    "data_seed": (0, True, SEED_MAX),
    "max_grad_norm": (0, True, None),
    "weight_decay": (0, True, None),
    "adam_epsilon": (0, True, None),
}
# Step counts that transformers reads as a fraction of the run below 1 and refuses unless whole above it.
STEP_COUNTS = ("logging_steps", "save_steps", "eval_steps")


def check_ranges(trainer: dict) -> list[str]:
    """Values of the right type that TRL or transformers would still refuse, or crash on, once training starts."""
    problems = []
    for key, given in trainer.items():
        if isinstance(given, bool) or not isinstance(given, int | float):
            continue
        if isinstance(given, float) and not math.isfinite(given):
            problems.append(f"trainer.{key}: must be a finite number, got {given}")
            continue
        if isinstance(given, int) and abs(given) > INT_MAX:
            problems.append(f"trainer.{key}: {given} is too large (TRL and torch take 64-bit integers)")
            continue
        if key == "max_steps" and given != -1 and given < 1:
            # -1, TRL's default, trains num_train_epochs epochs; 0 trained a whole epoch too, and said nothing.
            problems.append(
                f"trainer.max_steps: must be at least 1 (or -1: train num_train_epochs), got {given}"
            )
            continue
        if key not in RANGES:
            continue
        low, inclusive, high = RANGES[key]
        if given < low or (given == low and not inclusive):
            bound = f"at least {low}" if inclusive else f"above {low}"
            problems.append(f"trainer.{key}: must be {bound}, got {given}")
        elif high is not None and given > high:
            problems.append(f"trainer.{key}: must be at most {high}, got {given}")
        elif key in STEP_COUNTS and given > 1 and given != int(given):
            problems.append(
                f"trainer.{key}: a whole number of steps above 1 (below 1: a fraction of the run), got {given}"
            )
    # grpo-cli evaluates after training (`grpo-cli eval`), never during it: no trainer is given a held-out set.
    # Without one, transformers' Trainer refuses eval_strategy once the run directory exists, save_strategy: best
    # never saves, and there is no best checkpoint to load at the end. (Were evaluation added: RunGuard stages every
    # save in .saving/, and transformers records the best checkpoint there, a path gone once it is moved in place.)
    if trainer.get("eval_strategy", "no") not in ("no", None):
        problems.append(
            "trainer.eval_strategy: grpo-cli does not evaluate during training (the trainer gets no held-out "
            "set); leave it 'no' and evaluate checkpoints with `grpo-cli eval --adapter RUN_DIR/checkpoint-N`"
        )
    if trainer.get("save_strategy") == "best":
        problems.append(
            "trainer.save_strategy: 'best' needs evaluation during training, which grpo-cli does not run, so it "
            "would save no checkpoint; use 'steps' or 'epoch'"
        )
    if trainer.get("load_best_model_at_end"):
        problems.append(
            "trainer.load_best_model_at_end: grpo-cli does not evaluate during training, so there is no best "
            "checkpoint to load; compare checkpoints with `grpo-cli eval --adapter RUN_DIR/checkpoint-N`"
        )
    return problems


def build_config(config_class, **settings):
    """TRL's config class built from our settings; what its __post_init__ refuses becomes one line."""
    from grpo_cli.errors import UserError

    if settings.get("output_dir") and not settings.get("run_name"):
        # What the trackers of report_to name the run: its directory's name (`addition`, a sweep's
        # `learning_rate=0.001`), not the whole path transformers would use.
        settings["run_name"] = Path(settings["output_dir"]).name
    try:
        return config_class(**settings)
    except (ValueError, TypeError) as err:
        raise UserError(
            f"trainer: TRL's {config_class.__name__} rejected the settings: {' '.join(str(err).split())}"
        ) from err
