"""Regenerates `grpo_cli/trainer_fields.json` from the installed TRL config class of each algorithm in the table:

    python -m grpo_cli.algorithms.fields_table

after changing the TRL pin; `tests/test_trainer_fields.py` fails when what validate uses has drifted.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from typing import Any

from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.trainer_fields import TABLE_PATH


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


# A `str` field whose help lists its values ("Supported values are 'grpo', 'dr_grpo', ... and 'vespo'.": GRPOConfig's
# loss_type) is typed as those values: TRL checks them only at the first step ("Unknown loss type"), validate now.
SUPPORTED_VALUES = re.compile(r"Supported values are (.+?)\.(?:\s|$)")


def _stated_values(help_text: str) -> list[str]:
    found = SUPPORTED_VALUES.search(help_text)
    return re.findall(r"'([^']+)'", found.group(1)) if found else []


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

    table = {}
    for algorithm in ALGORITHMS.values():
        module, name = algorithm.config_class.split(":")
        cls = getattr(importlib.import_module(module), name)
        hints = typing.get_type_hints(cls)
        specs = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            help_text = " ".join(str(f.metadata.get("help", "")).split())
            type_expr = _type_expr(hints[f.name])
            if type_expr == "str" and _stated_values(help_text):
                type_expr = f"Literal[{', '.join(repr(v) for v in _stated_values(help_text))}]"
            specs[f.name] = {
                "type": type_expr,
                "default": _jsonable(default),
                "help": help_text.split(". ")[0][:200],
            }
        table[algorithm.name] = {"class": f"{cls.__module__}.{cls.__qualname__}", "fields": specs}
    import transformers

    table["trl_version"] = trl.__version__
    # TRL's configs inherit transformers' TrainingArguments: its fields move with transformers' releases.
    table["transformers_version"] = transformers.__version__
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    table["causal_lm_model_types"] = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return table


if __name__ == "__main__":
    TABLE_PATH.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}")
