"""The local data files a dataset can be read from: file suffix -> the `datasets` loader that reads it; and the one
reader of the JSONL files users give (datasets, `generate -f` prompts, `rewards test -f` completions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from grpo_cli.errors import UserError

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def jsonl_objects(
    text: str, where: str, shape: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL text. A line that is not JSON, or not a JSON object,
    is a UserError at `where:LINE` saying what each line must be (`shape`). (metrics.jsonl has its own reader:
    `run_files.read_metrics` skips a cut-off last line, which a run still writing may leave.)"""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (
            ValueError,
            RecursionError,
        ) as err:  # bad JSON (a number over 4300 digits too), nested too deep
            raise UserError(f"{where}:{number}: invalid JSON: {getattr(err, 'msg', err)}") from err
        if not isinstance(record, dict):
            raise UserError(f"{where}:{number}: each line must be {shape}, not {line.strip()[:40]}")
        yield number, record
