"""The fields of TRL's trainer configs (GRPOConfig, PPOConfig), available without importing torch or trl.

`validate` must stay fast, and importing trl takes seconds, so the fields are read from a table generated from the
installed classes (`trainer_fields.json`, next to this file). Regenerate it after changing the TRL pin with

    python -m grpo_cli.trainer_fields

`tests/test_trainer_fields.py` fails when the table drifts from the installed TRL.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

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
def _adapter(type_expr: str):
    from pydantic import TypeAdapter

    return TypeAdapter(eval(type_expr, {"Literal": Literal, "Any": Any}))  # the table's own expressions


def check_value(field: TrainerField, value: Any) -> tuple[Any, str | None]:
    """Return (the value coerced to the field's type, None) or (value, a short description of what is wrong)."""
    from pydantic import ValidationError

    try:
        return _adapter(field.type).validate_python(value), None
    except ValidationError as err:
        return value, f"expected {field.type}, got {value!r} ({err.errors()[0]['msg'].lower()})"


# ---- generation (imports trl) ----


def _type_expr(tp: Any) -> str:
    import enum
    import types
    import typing

    origin = typing.get_origin(tp)
    if tp is type(None):
        return "None"
    if tp in (int, float, bool, str):
        return tp.__name__
    if tp is dict or origin is dict:
        return "dict"
    if tp is list or origin is list:
        args = typing.get_args(tp)
        return f"list[{_type_expr(args[0])}]" if args else "list"
    if origin in (typing.Union, types.UnionType):
        parts = list(dict.fromkeys(_type_expr(arg) for arg in typing.get_args(tp)))
        return " | ".join(parts)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(arg) for arg in typing.get_args(tp))}]"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"Literal[{', '.join(repr(member.value) for member in tp)}]"
    return "Any"


def _jsonable(value: Any) -> Any:
    import dataclasses
    import enum

    if value is dataclasses.MISSING:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def generate() -> dict:
    """Build the table from the installed TRL classes."""
    import dataclasses
    import typing

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl
    from trl import GRPOConfig
    from trl.experimental.ppo import PPOConfig

    table = {}
    for algorithm, cls in (("grpo", GRPOConfig), ("ppo", PPOConfig)):
        hints = typing.get_type_hints(cls)
        specs = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            help_text = " ".join(str(f.metadata.get("help", "")).split())
            specs[f.name] = {
                "type": _type_expr(hints[f.name]),
                "default": _jsonable(default),
                "help": help_text.split(". ")[0][:200],
            }
        table[algorithm] = {"class": f"{cls.__module__}.{cls.__qualname__}", "fields": specs}
    table["trl_version"] = trl.__version__
    return table


if __name__ == "__main__":
    TABLE_PATH.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}")
