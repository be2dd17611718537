"""Datasets: a Hub id, a local .jsonl/.json/.csv/.parquet file, or a task generated in code -> rows with a
`prompt` (text, or chat messages when the tokenizer has a chat template) and every other column passed through to
the rewards. Also the held-out split used by `eval`.
"""

from __future__ import annotations

import csv
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_cli.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

    from grpo_cli.recipe import DatasetSection

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---- tasks generated in code ----


def addition_task(
    size: int, seed: int, min_operand: int = 0, max_operand: int = 9, max_sum: int | None = None
) -> list[dict]:
    """Distinct problems `a+b=` with the sum in the `answer` column, shuffled with `seed`.

    At most `size` rows; fewer when there are fewer distinct problems ((max - min + 1) ** 2, less those whose sum
    exceeds `max_sum` when it is given).
    """
    pairs = [
        (a, b)
        for a in range(min_operand, max_operand + 1)
        for b in range(min_operand, max_operand + 1)
        if max_sum is None or a + b <= max_sum
    ]
    random.Random(seed).shuffle(pairs)
    return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs[:size]]


TASKS: dict[str, Callable[..., list[dict]]] = {"addition": addition_task}


# ---- columns, without loading anything heavy (for `validate`) ----


def is_local(source: str) -> bool:
    return Path(source).suffix.lower() in LOCAL_FORMATS or Path(source).exists()


def local_columns(path: Path) -> list[str]:
    """The column names of a local data file, read from its first record or its schema."""
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise UserError(f"dataset {path}: unsupported file type; use one of {', '.join(LOCAL_FORMATS)}")
    if not path.is_file():
        raise UserError(f"dataset file not found: {path}")
    try:
        if suffix == ".jsonl":
            with path.open() as f:
                first = next((line for line in f if line.strip()), None)
            record = json.loads(first) if first else {}
            if not isinstance(record, dict):
                raise UserError(
                    f"dataset {path}: each line must be a JSON object of columns, not {first.strip()[:40]}"
                )
            return list(record)
        if suffix == ".json":
            data = json.loads(path.read_text())
            records = data if isinstance(data, list) else next(iter(data.values()), []) if data else []
            return list(records[0]) if records and isinstance(records[0], dict) else list(data)
        if suffix == ".csv":
            with path.open(newline="") as f:
                return next(csv.reader(f), [])
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except (json.JSONDecodeError, StopIteration, OSError) as err:
        raise UserError(f"dataset {path}: cannot read it ({err})") from err


def known_columns(spec: DatasetSection) -> list[str] | None:
    """The dataset's columns when they can be known without downloading (local files, generated tasks)."""
    if spec.generate is not None:
        task = _task(spec.generate.task)
        return list(task(size=1, seed=0, **spec.generate.options)[0])
    if spec.source is not None and is_local(spec.source):
        return local_columns(Path(spec.source))
    return None


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise UserError(f"dataset.prompt: bad template {template!r}: {err}") from err


def prompt_columns(spec: DatasetSection) -> list[str]:
    """Columns the prompt needs: the template's fields, else `messages` or `prompt`."""
    if spec.prompt is not None:
        return template_fields(spec.prompt)
    return []


def _task(name: str):
    if name not in TASKS:
        raise UserError(f"dataset.generate.task: unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]


# ---- loading ----


def _load_raw(spec: DatasetSection, source: str | None, split: str | None) -> Dataset:
    from datasets import Dataset, load_dataset

    if spec.generate is not None:
        gen = spec.generate
        try:
            rows = _task(gen.task)(size=gen.size, seed=gen.seed, **gen.options)
        except TypeError as err:
            raise UserError(f"dataset.generate.options: {err}") from err
        return Dataset.from_list(rows)
    if is_local(source):
        path = Path(source)
        local_columns(path)  # clear errors for a missing or unreadable file
        return load_dataset(LOCAL_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
    try:
        return load_dataset(source, spec.config, split=split)
    except Exception as err:  # datasets raises many types for "cannot get this dataset"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load dataset {source!r} (split {split!r}): {first} "
            "(offline: use a local .jsonl/.json/.csv/.parquet file, or set HF_DATASETS_OFFLINE=1 for a cached one)"
        ) from err


def load_splits(spec: DatasetSection, seed: int) -> tuple[Dataset, Dataset | None]:
    """The training rows and the held-out rows (None when the recipe names no held-out data)."""
    train = _load_raw(spec, spec.source, spec.split)
    held_out = None
    if spec.eval_split is not None:
        held_out = _load_raw(
            spec, spec.eval_split if is_local(spec.eval_split) else spec.source, spec.eval_split
        )
    elif spec.eval_ratio is not None or spec.eval_size is not None:
        test_size = spec.eval_ratio if spec.eval_ratio is not None else spec.eval_size
        if spec.eval_size is not None and spec.eval_size >= len(train):
            raise UserError(
                f"dataset.eval_size={spec.eval_size} leaves no training rows (dataset has {len(train)})"
            )
        parts = train.train_test_split(test_size=test_size, seed=seed)
        train, held_out = parts["train"], parts["test"]
    if spec.limit is not None:
        train = train.select(range(min(spec.limit, len(train))))
    return train, held_out


def uses_chat(spec: DatasetSection, tokenizer) -> bool:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if spec.chat_template is True and not has_template:
        raise UserError("dataset.chat_template is true, but the tokenizer has no chat template")
    return has_template if spec.chat_template is None else spec.chat_template


def build_prompt(spec: DatasetSection, row: dict[str, Any], chat: bool) -> str | list[dict]:
    """The prompt of one row, as the trainer will see it."""
    if spec.prompt is not None:
        text = spec.prompt.format(**row)
        messages = [{"role": "user", "content": text}]
    elif "messages" in row:
        messages = list(row["messages"])
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # the reference answer: the policy writes its own
    elif "prompt" in row:
        if not isinstance(row["prompt"], str):
            messages = list(row["prompt"])
        else:
            messages = [{"role": "user", "content": row["prompt"]}]
    else:
        raise UserError(
            f"dataset: no prompt; set dataset.prompt to a template over the columns {sorted(row)}, "
            'e.g. prompt: "{' + sorted(row)[0] + '}", or provide a `prompt` or `messages` column'
        )
    if spec.system_prompt and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": spec.system_prompt}, *messages]
    if chat:
        return messages
    return "\n\n".join(m["content"] for m in messages)


def prepare(dataset: Dataset, spec: DatasetSection, tokenizer) -> Dataset:
    """Add the `prompt` column the trainers read; keep every other column for the rewards."""
    if len(dataset) == 0:
        raise UserError("dataset: no rows (check dataset.source, dataset.split and dataset.limit)")
    missing = [c for c in prompt_columns(spec) if c not in dataset.column_names]
    if missing:
        raise UserError(
            f"dataset.prompt uses column(s) {', '.join(missing)} that the dataset does not have; "
            f"columns: {', '.join(dataset.column_names)}"
        )
    chat = uses_chat(spec, tokenizer)
    prompts = [build_prompt(spec, row, chat) for row in dataset]
    if "prompt" in dataset.column_names:
        dataset = dataset.remove_columns("prompt")
    return dataset.add_column("prompt", prompts)


def tokenize_prompts(tokenizer, prompts: list, chat_template_kwargs: dict | None = None) -> list[list[int]]:
    """Prompt token ids as TRL's GRPOTrainer makes them: the chat template with the generation prompt for
    message lists, plain `tokenizer(text)` for text."""
    if not prompts:
        return []
    if not isinstance(prompts[0], str):
        encoded = tokenizer.apply_chat_template(
            conversation=prompts,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **(chat_template_kwargs or {}),
        )
        return [list(ids) for ids in encoded["input_ids"]]
    return [list(ids) for ids in tokenizer(text=prompts)["input_ids"]]
