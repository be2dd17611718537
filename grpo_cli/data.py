"""A recipe's rows: read from a Hub id, a local .jsonl/.json/.csv/.parquet file or a generated task, and split
into training and held-out rows (the held-out ones are what `eval` scores)."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_cli.data_formats import LOCAL_FORMATS, jsonl_objects
from grpo_cli.errors import UserError, describe
from grpo_cli.prompting import build_prompt
from grpo_cli.tasks import TASKS, check_task

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Dataset

    from grpo_cli.recipe import DatasetSection


def is_local(source: str) -> bool:
    return Path(source).suffix.lower() in LOCAL_FORMATS or Path(source).exists()


@dataclass
class LocalData:
    """A parsed local data file: its columns, row count and first row, and (JSON and CSV) every row as one
    arrow table, which `load_splits` wraps as the training rows without parsing the file again. Parquet is
    read by its first row group here and loaded by `datasets` from the file."""

    columns: list[str]
    rows: int
    first: dict[str, Any]
    table: pa.Table | None = None

    def row_dicts(self, columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Every row (only these columns, when given) as a dict, for a check that reads rows one by one."""
        if self.table is None:
            raise ValueError("only JSON and CSV files keep their rows")
        table = self.table.select([c for c in columns if c in self.columns]) if columns else self.table
        return table.to_pylist()


# The files parsed in this process, by (resolved path, size, mtime): `validate` and `load_splits` share one
# parse. A few entries (a training file and a held-out file); the table is the one the loaded rows wrap, so
# the cache holds no second copy of them.
_PARSED: dict[tuple[str, int, int], LocalData] = {}
_PARSED_KEEP = 4


def read_local(path: Path) -> LocalData:
    """Read a local data file the way `train` will, and say in one line what would stop it.

    Every JSON line is parsed (a single malformed line fails pyarrow in `train`), text must be UTF-8, and the
    file must hold at least one row of columns. A file read before in this process, unchanged since (same
    size and modification time), is not read again.
    """
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise UserError(f"dataset {path}: unsupported file type; use one of {', '.join(LOCAL_FORMATS)}")
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise UserError(f"dataset file {what}: {path}")
    try:
        stat = path.stat()
    except OSError as err:
        raise UserError(f"dataset {path}: cannot read it ({err.strerror or err})") from err
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _PARSED:
        local = _read_parquet(path) if suffix == ".parquet" else _parse(path, suffix)
        while len(_PARSED) >= _PARSED_KEEP:
            del _PARSED[next(iter(_PARSED))]
        _PARSED[key] = local
    return _PARSED[key]


def _parse(path: Path, suffix: str) -> LocalData:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"dataset {path}: cannot read it ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"dataset {path}: not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from err
    del raw
    if suffix == ".csv":
        return _parse_csv(path, text)
    columns = _Columns()
    if suffix == ".jsonl":
        for _number, record in jsonl_objects(text, f"dataset {path}", "a JSON object of columns"):
            columns.add(record)
    else:
        try:
            loaded = json.loads(text)
        except (ValueError, RecursionError) as err:  # ValueError: bad JSON, or a number over 4300 digits
            raise UserError(f"dataset {path}: invalid JSON: {getattr(err, 'msg', err)}") from err
        if isinstance(loaded, dict) and loaded and isinstance(next(iter(loaded.values())), list):
            loaded = next(iter(loaded.values()))  # {"data": [records]}
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            raise UserError(f"dataset {path}: must be a JSON list of objects (one per row) of columns")
        for record in loaded:
            columns.add(record)
    if not columns.rows or not columns.first:
        raise UserError(f"dataset {path}: no rows")
    return LocalData(list(columns.values), columns.rows, columns.first, columns.table())


class _Columns:
    """JSON rows gathered column by column, as `datasets`' JSON loader reads them: every key any row has is a
    column, null where a row lacks it, in the order keys first appear."""

    def __init__(self) -> None:
        self.values: dict[str, list] = {}
        self.rows = 0
        self.first: dict[str, Any] | None = None

    def add(self, record: dict[str, Any]) -> None:
        for name, value in record.items():
            column = self.values.get(name)
            if column is None:
                column = self.values[name] = [None] * self.rows
            column.append(value)
        self.rows += 1
        if len(record) < len(self.values):
            for column in self.values.values():
                if len(column) < self.rows:
                    column.append(None)
        if self.first is None:
            self.first = record

    def table(self) -> pa.Table | None:
        """The rows as one arrow table, or None where `datasets`' JSON loader would read them otherwise, which
        then reads the file itself: a column mixing types arrow cannot hold in one column (a number in one
        row, text in another), objects whose keys differ from row to row below the top level (it stores those
        as JSON text), or text it reads as dates (it infers them from the file's first rows)."""
        import pyarrow as pa
        import pyarrow.json as paj

        if any(_mixed_structs(column) for column in self.values.values()):
            return None
        try:
            table = pa.table(self.values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        sample = "\n".join(json.dumps(row) for row in table.slice(0, 100).to_pylist())
        try:
            inferred = paj.read_json(io.BytesIO(sample.encode())).schema
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        for field in inferred:
            if not pa.types.is_null(field.type) and field.type != table.schema.field(field.name).type:
                return None
        return table


def _mixed_structs(values: list) -> bool:
    """Whether these values of one column hold objects with differing keys, or objects or lists beside plain
    values, at some depth: what `datasets`' JSON loader stores as JSON text instead of a typed column."""
    pending = [values]
    while pending:
        content = [x for x in pending.pop() if x is not None]
        if not content:
            continue
        if all(isinstance(x, dict) for x in content):
            keys = set(content[0])
            if not keys or any(set(x) != keys for x in content):
                return True
            pending += [[x[key] for x in content] for key in keys]
        elif all(isinstance(x, list) for x in content):
            pending.append([item for x in content for item in x])
        elif any(isinstance(x, (dict, list)) for x in content):
            return True
    return False


def _parse_csv(path: Path, text: str) -> LocalData:
    # pandas, as `datasets`' CSV loader reads it: numbers become number columns, empty cells null.
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        frame = None
    except (pd.errors.ParserError, ValueError) as err:
        raise UserError(f"dataset {path}: invalid CSV: {str(err).strip()}") from err
    if frame is None or frame.empty:
        raise UserError(f"dataset {path}: no rows (a header line, then one line per row)")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    first = table.slice(0, 1).to_pylist()[0]
    return LocalData(list(table.column_names), table.num_rows, first, table)


def _read_parquet(path: Path) -> LocalData:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        rows = parquet.metadata.num_rows
        first = parquet.read_row_group(0).slice(0, 1).to_pylist()[0] if rows else {}
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a file it cannot read
        raise UserError(f"dataset {path}: not a readable parquet file ({describe(err)})") from err
    if not rows:
        raise UserError(f"dataset {path}: no rows")
    return LocalData(list(parquet.schema_arrow.names), rows, first)


def _load_raw(spec: DatasetSection, source: str | None, split: str | None) -> Dataset:
    from datasets import Dataset, load_dataset

    if spec.generate is not None:
        gen = spec.generate
        problems = check_task(gen)
        if problems:
            raise UserError("; ".join(problems))
        return Dataset.from_list(TASKS[gen.task](size=gen.size, seed=gen.seed, **gen.options))
    if is_local(source):
        path = Path(source)
        local = read_local(path)  # clear errors for a missing, unreadable or malformed file
        if local.table is not None:
            return Dataset(local.table)  # the rows `validate` parsed, not a second parse of the file
        return load_dataset(LOCAL_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
    try:
        return load_dataset(source, spec.config, split=split)
    except Exception as err:  # datasets raises many types for "cannot get this dataset"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load dataset {source!r} (split {split!r}): {first} "
            "(offline: use a local .jsonl/.json/.csv/.parquet file, or set HF_DATASETS_OFFLINE=1 for a cached one)"
        ) from err


def label(spec: DatasetSection) -> str:
    """The dataset as a user named it: its Hub id or file, or the task it is generated from."""
    if spec.generate is not None:
        return f"{spec.generate.task} (generated, {spec.generate.size} rows)"
    return str(spec.source)


def load_splits(spec: DatasetSection, seed: int) -> tuple[Dataset, Dataset | None]:
    """The training rows and the held-out rows (None when the recipe names no held-out data)."""
    train = _load_raw(spec, spec.source, spec.split)
    held_out = None
    if spec.eval_split is not None:
        problem = eval_split_problem(spec)
        if problem:
            raise UserError(problem)
        held_out = _load_raw(
            spec, spec.eval_split if is_local(spec.eval_split) else spec.source, spec.eval_split
        )
    elif spec.eval_ratio is not None or spec.eval_size is not None:
        train, held_out = hold_out(spec, train, seed)
    if spec.limit is not None:
        train = train.select(range(min(spec.limit, len(train))))
    return train, held_out


def first_rows(spec: DatasetSection, n: int) -> Dataset:
    """Up to `n` rows of the dataset, held-out ones when the recipe names a held-out split or file, read without
    splitting: a generated task makes only `n` rows; a file or Hub split is still loaded whole (see `_load_raw`)
    before its first `n` are taken."""
    if spec.generate is not None:
        fewer = spec.generate.model_copy(update={"size": min(n, spec.generate.size)})
        return _load_raw(spec.model_copy(update={"generate": fewer}), None, None)
    if spec.eval_split is not None and not eval_split_problem(spec):
        rows = _load_raw(spec, spec.eval_split if is_local(spec.eval_split) else spec.source, spec.eval_split)
    else:
        rows = _load_raw(spec, spec.source, spec.split)
    return rows.select(range(min(n, len(rows))))


def hold_out(spec: DatasetSection, rows: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """Split off `eval_size` prompts (or `eval_ratio` of them) with every row that shares one, so a prompt with
    several rows (preference pairs for one question) is never on both sides of the split.

    With one row per prompt this is datasets' own row split. With several, the distinct prompts are split the
    same way, in order of first appearance: a task that repeats each problem's prompt holds out the same
    problems as one that lists each once, for the same seed.
    """
    from datasets import Dataset

    test_size = spec.eval_ratio if spec.eval_ratio is not None else spec.eval_size
    keys = prompt_keys(spec, rows)
    groups = list(dict.fromkeys(keys))
    problem = split_problem(spec, keys)
    if problem:
        raise UserError(problem)
    if len(groups) == len(keys):
        parts = rows.train_test_split(test_size=test_size, seed=seed)
        return parts["train"], parts["test"]
    members: dict[Any, list[int]] = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    parts = Dataset.from_dict({"group": list(range(len(groups)))}).train_test_split(
        test_size=test_size, seed=seed
    )

    def rows_of(part: str) -> Dataset:
        return rows.select([i for g in parts[part]["group"] for i in members[groups[g]]])

    return rows_of("train"), rows_of("test")


def prompt_keys(spec: DatasetSection, rows: Dataset | list[dict]) -> list:
    """Each row's prompt as text (the row's index when rows have no prompt, so each is its own group)."""
    try:
        return [build_prompt(spec, row, chat=False) for row in rows]
    except UserError:
        return list(range(len(rows)))


def split_problem(spec: DatasetSection, keys: list) -> str | None:
    """`held_out_problem` for rows with these prompt keys, counted as `hold_out` splits them: by distinct prompt."""
    distinct = len(set(keys))
    return held_out_problem(spec, distinct, "prompts" if distinct < len(keys) else "rows")


def eval_split_problem(spec: DatasetSection) -> str | None:
    """A split name for a local file: a file has no splits, and loading it would evaluate on the training rows."""
    if spec.source and is_local(spec.source) and spec.eval_split and not is_local(spec.eval_split):
        return (
            f"dataset.eval_split: {spec.eval_split!r} is a split name, but a local file has no splits; "
            "name a held-out file, or use eval_size or eval_ratio"
        )
    return None


def training_rows(spec: DatasetSection, rows: int) -> int:
    """How many of `rows` rows (or distinct prompts) train, as `load_splits` splits and limits them."""
    if spec.eval_size is not None:
        rows -= spec.eval_size
    elif spec.eval_ratio is not None:
        rows -= math.ceil(spec.eval_ratio * rows)  # as datasets' train_test_split rounds
    return max(0, min(rows, spec.limit) if spec.limit is not None else rows)


def held_out_problem(spec: DatasetSection, rows: int, what: str = "rows") -> str | None:
    """Why holding out eval_size or eval_ratio of `rows` rows (or distinct prompts: `what`) leaves nothing to
    train on (or to evaluate), if so."""
    if spec.eval_size is not None and spec.eval_size >= rows:
        return f"dataset.eval_size={spec.eval_size} leaves no training rows (dataset has {rows} {what})"
    if spec.eval_ratio is not None:
        held_out = math.ceil(spec.eval_ratio * rows)  # as datasets' train_test_split rounds
        if held_out >= rows or math.floor((1 - spec.eval_ratio) * rows) < 1:
            return f"dataset.eval_ratio={spec.eval_ratio} leaves no training rows (dataset has {rows} {what})"
    return None
