"""Datasets: a Hub id, a local .jsonl/.json/.csv/.parquet file, or a task generated in code -> rows with a
`prompt` (text, or chat messages when the tokenizer has a chat template) and every other column passed through to
the rewards. Also the held-out split used by `eval`.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_cli.errors import UserError, describe, did_you_mean

if TYPE_CHECKING:
    from datasets import Dataset

    from grpo_cli.recipe import DatasetSection, GenerateSection

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---- tasks generated in code ----

MAX_OPERAND = 10**9  # operands are written out in prompts: beyond this nothing learns them
_ENUMERATE_UP_TO = 100_000  # problems; more than this are sampled instead of listed


def addition_task(
    size: int, seed: int, min_operand: int = 0, max_operand: int = 9, max_sum: int | None = None
) -> list[dict]:
    """Distinct problems `a+b=` with the sum in the `answer` column, shuffled with `seed`.

    At most `size` rows; fewer when there are fewer distinct problems ((max - min + 1) ** 2, less those whose sum
    exceeds `max_sum` when it is given). Large ranges are sampled without listing every pair, so any range is fast.
    """
    problems = check_addition(min_operand=min_operand, max_operand=max_operand, max_sum=max_sum)
    if problems:
        raise ValueError("; ".join(problems))
    total = addition_count(min_operand, max_operand, max_sum)
    rng = random.Random(seed)
    if total <= _ENUMERATE_UP_TO:
        # In the order of all pairs a-major, filtered by max_sum: the ranges stop where the sums would exceed it.
        top = max_operand if max_sum is None else min(max_operand, max_sum - min_operand)
        pairs = [
            (a, b)
            for a in range(min_operand, top + 1)
            for b in range(
                min_operand, (max_operand if max_sum is None else min(max_operand, max_sum - a)) + 1
            )
        ]
        rng.shuffle(pairs)
        pairs = pairs[:size]
    else:  # distinct pairs drawn at random: at least half of any draw is a valid pair (see addition_count)
        top = max_operand if max_sum is None else min(max_operand, max_sum - min_operand)
        chosen: dict[tuple[int, int], None] = {}
        while len(chosen) < min(size, total):
            a, b = rng.randint(min_operand, top), rng.randint(min_operand, max_operand)
            if max_sum is None or a + b <= max_sum:
                chosen.setdefault((a, b))
        pairs = list(chosen)
    return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in pairs]


def addition_count(min_operand: int, max_operand: int, max_sum: int | None) -> int:
    """How many distinct problems the addition task has."""
    width = max_operand - min_operand + 1
    if max_sum is None or max_sum >= 2 * max_operand:
        return width * width
    # For each a, b runs from min_operand to min(max_operand, max_sum - a): a sum of arithmetic runs.
    total = 0
    for a in range(min_operand, min(max_operand, max_sum - min_operand) + 1):
        total += min(max_operand, max_sum - a) - min_operand + 1
    return total


def check_addition(**options: Any) -> list[str]:
    """What is wrong with the addition task's options (their names are checked by `check_task`)."""
    problems = []
    for name in ("min_operand", "max_operand", "max_sum"):
        value = options.get(name)
        if value is None and name == "max_sum":
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be a whole number, got {value!r}")
        elif not 0 <= value <= MAX_OPERAND:
            problems.append(f"{name} must be between 0 and {MAX_OPERAND}, got {value}")
    if problems:
        return problems
    low, high, max_sum = options["min_operand"], options["max_operand"], options.get("max_sum")
    if high < low:
        problems.append(f"max_operand ({high}) is below min_operand ({low})")
    elif max_sum is not None and max_sum < 2 * low:
        problems.append(f"max_sum ({max_sum}) is below the smallest sum, {low}+{low}: no problem is left")
    elif max_sum is not None and min(high, max_sum - low) - low > 10 * _ENUMERATE_UP_TO:
        problems.append(
            f"max_sum ({max_sum}) with operands up to {high}: use max_operand to bound the problems"
        )
    return problems


NEAR_MISSES = (-10, -3, -2, -1, 1, 2, 3, 10)  # the mistakes a model that half knows addition makes


def addition_preferences_task(
    size: int,
    seed: int,
    min_operand: int = 0,
    max_operand: int = 9,
    max_sum: int | None = None,
    pairs_per_problem: int = 1,
) -> list[dict]:
    """The addition task's problems as preference pairs for a reward model: `chosen` the sum, `rejected` a wrong
    answer near it (off by 1 to 3, or by 10). `size` counts problems, in the addition task's order; each gets
    `pairs_per_problem` rows with distinct wrong answers (fewer where a sum has fewer non-negative near misses).
    The rows of one problem share its prompt, so a held-out split keeps them together (see `load_splits`)."""
    problems = addition_task(size, seed, min_operand, max_operand, max_sum)
    rng = random.Random(seed + 1)
    rows = []
    for problem in problems:
        right = int(problem["answer"])
        wrongs = [right + d for d in NEAR_MISSES if right + d >= 0]
        for wrong in rng.sample(wrongs, min(pairs_per_problem, len(wrongs))):
            rows.append({**problem, "chosen": str(right), "rejected": str(wrong)})
    return rows


def check_addition_preferences(pairs_per_problem: Any = 1, **options: Any) -> list[str]:
    problems = check_addition(**options)
    if isinstance(pairs_per_problem, bool) or not isinstance(pairs_per_problem, int):
        problems.append(f"pairs_per_problem must be a whole number, got {pairs_per_problem!r}")
    elif not 1 <= pairs_per_problem <= len(NEAR_MISSES):
        problems.append(
            f"pairs_per_problem must be between 1 and {len(NEAR_MISSES)}, got {pairs_per_problem}"
        )
    return problems


TASKS: dict[str, Callable[..., list[dict]]] = {
    "addition": addition_task,
    "addition_preferences": addition_preferences_task,
}
TASK_CHECKS: dict[str, Callable[..., list[str]]] = {
    "addition": check_addition,
    "addition_preferences": check_addition_preferences,
}


def check_task(spec: GenerateSection) -> list[str]:
    """Every problem with a generated dataset's task and options, each naming its recipe key."""
    if spec.task not in TASKS:
        return [f"dataset.generate.task: unknown task {spec.task!r}; available: {', '.join(TASKS)}"]
    task = TASKS[spec.task]
    parameters = {
        name: p for name, p in inspect.signature(task).parameters.items() if name not in ("size", "seed")
    }
    problems = []
    for key in spec.options:
        if key not in parameters:
            problems.append(
                f"dataset.generate.options.{key}: not an option of the {spec.task} task"
                f"{did_you_mean(str(key), parameters)}; its options: "
                + ", ".join(f"{n}={p.default!r}" for n, p in parameters.items())
            )
    if problems:
        return problems
    given = {n: spec.options.get(n, p.default) for n, p in parameters.items()}
    return [f"dataset.generate.options: {problem}" for problem in TASK_CHECKS[spec.task](**given)]


def task_prompts(spec: GenerateSection) -> int:
    """How many distinct prompts (problems) a (checked) generated dataset has; `eval_size` counts these."""
    options = {"min_operand": 0, "max_operand": 9, "max_sum": None, **spec.options}
    return min(spec.size, addition_count(options["min_operand"], options["max_operand"], options["max_sum"]))


# ---- columns, without loading anything heavy (for `validate`) ----


def is_local(source: str) -> bool:
    return Path(source).suffix.lower() in LOCAL_FORMATS or Path(source).exists()


@dataclass
class LocalData:
    """What `validate` learns from reading a local data file: its columns, row count and first row, and every
    row when reading the file parsed them all anyway (JSON and CSV; not parquet, read by its first row group)."""

    columns: list[str]
    rows: int
    first: dict[str, Any]
    records: list[dict[str, Any]] | None = None


def read_local(path: Path) -> LocalData:
    """Read a local data file the way `train` will, and say in one line what would stop it.

    Every JSON line is parsed (a single malformed line fails pyarrow in `train`), text must be UTF-8, and the
    file must hold at least one row of columns.
    """
    suffix = path.suffix.lower()
    if suffix not in LOCAL_FORMATS:
        raise UserError(f"dataset {path}: unsupported file type; use one of {', '.join(LOCAL_FORMATS)}")
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise UserError(f"dataset file {what}: {path}")
    if suffix == ".parquet":
        return _read_parquet(path)
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
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:
                raise UserError(f"dataset {path}:{number}: invalid JSON: {getattr(err, 'msg', err)}") from err
            if not isinstance(record, dict):
                raise UserError(
                    f"dataset {path}:{number}: each line must be a JSON object of columns, not {line.strip()[:40]}"
                )
            records.append(record)
        return _records(path, records)
    if suffix == ".json":
        try:
            loaded = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise UserError(f"dataset {path}: invalid JSON: {getattr(err, 'msg', err)}") from err
        if isinstance(loaded, dict) and loaded and isinstance(next(iter(loaded.values())), list):
            loaded = next(iter(loaded.values()))  # {"data": [records]}
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            raise UserError(f"dataset {path}: must be a JSON list of objects (one per row) of columns")
        return _records(path, loaded)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        rows = list(reader)
    except csv.Error as err:
        raise UserError(f"dataset {path}: invalid CSV: {err}") from err
    rows = [r for r in rows if r]
    if not header or not rows:
        raise UserError(f"dataset {path}: no rows (a header line, then one line per row)")
    records = [dict(zip(header, row, strict=False)) for row in rows]
    return LocalData(header, len(rows), records[0], records)


def _records(path: Path, records: list[dict]) -> LocalData:
    if not records or not records[0]:
        raise UserError(f"dataset {path}: no rows")
    return LocalData(list(records[0]), len(records), records[0], records)


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


def local_columns(path: Path) -> list[str]:
    """The column names of a local data file, read from its first record or its schema."""
    return read_local(path).columns


def known_columns(spec: DatasetSection) -> list[str] | None:
    """The dataset's columns when they can be known without downloading (local files, generated tasks)."""
    if spec.generate is not None:
        problems = check_task(spec.generate)
        if problems:
            raise UserError("; ".join(problems))
        task = TASKS[spec.generate.task]
        return list(task(size=1, seed=0, **spec.generate.options)[0])
    if spec.source is not None and is_local(spec.source):
        return local_columns(Path(spec.source))
    return None


LITERAL_BRACES = "write {{ and }} for literal braces"


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise UserError(f"dataset.prompt: bad template {template!r}: {err} ({LITERAL_BRACES})") from err


def template_problems(template: str) -> list[str]:
    """What in a prompt template `str.format(**row)` cannot fill from a row's columns by name."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        return [f"dataset.prompt: bad template {template!r}: {err} ({LITERAL_BRACES})"]
    problems = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "" or name.isdigit():
            problems.append(
                f"dataset.prompt: {field} is positional; name a column, e.g. {{question}} ({LITERAL_BRACES})"
            )
        elif "." in name or "[" in name:
            problems.append(
                f"dataset.prompt: {field} reads an attribute or item; name a column only ({LITERAL_BRACES})"
            )
        elif conversion:
            problems.append(
                f"dataset.prompt: {field} has a conversion (!{conversion}); write {{{name}}} ({LITERAL_BRACES})"
            )
        elif spec and "{" in spec:
            problems.append(f"dataset.prompt: {field} nests a field in its format spec ({LITERAL_BRACES})")
    return problems


def prompt_columns(spec: DatasetSection) -> list[str]:
    """Columns the prompt needs: the template's fields, else `messages` or `prompt`."""
    if spec.prompt is not None:
        return template_fields(spec.prompt)
    return []


# ---- loading ----


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
        read_local(path)  # clear errors for a missing, unreadable or malformed file
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


def chat_as_text_warning(
    spec: DatasetSection, first_row: dict[str, Any] | None, has_template: bool | None, tokenizer_name: str
) -> str | None:
    """What to say when chat data (a `messages` column, or `prompt` message lists) would reach the model as plain
    text because its tokenizer has no chat template and the recipe leaves dataset.chat_template unset; else None.

    `validate` calls it with what it can learn without loading the tokenizer (`has_template` None: unknown, say
    nothing), `prepare` with the loaded tokenizer.
    """
    if (
        has_template is not False
        or spec.chat_template is not None
        or spec.prompt is not None
        or not first_row
    ):
        return None
    if "messages" in first_row:
        column = "messages"
    elif "prompt" in first_row and not isinstance(first_row["prompt"], str):
        column = "prompt"
    else:
        return None
    return (
        f"dataset: the `{column}` column holds chat messages, but the tokenizer of {tokenizer_name} has no chat "
        "template, so each prompt becomes its messages' text joined by blank lines, without roles; use a chat "
        "model's tokenizer, or set dataset.chat_template: false to train on that text (which silences this)"
    )


BUILT_FROM_CONFIG = "a model built from a config"
_said: set[str] = set()


def warn_once(message: str) -> None:
    """A warning on stderr, once per process (prepare runs for train and held-out rows alike), main process only."""
    from grpo_cli.distributed import is_main_process
    from grpo_cli.output import say

    if message not in _said and is_main_process():
        _said.add(message)
        say(f"warning: {message}")


def uses_chat(spec: DatasetSection, tokenizer) -> bool:
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if spec.chat_template is True and not has_template:
        raise UserError("dataset.chat_template is true, but the tokenizer has no chat template")
    return has_template if spec.chat_template is None else spec.chat_template


def chat_for(spec: DatasetSection, tokenizer, first_row: dict[str, Any]) -> bool:
    """`uses_chat`, saying (once) when chat data will reach the model as plain text (`chat_as_text_warning`)."""
    chat = uses_chat(spec, tokenizer)
    has_template = getattr(tokenizer, "chat_template", None) is not None
    name = getattr(tokenizer, "name_or_path", "") or BUILT_FROM_CONFIG  # the character tokenizer has no name
    warning = chat_as_text_warning(spec, first_row, has_template, name)
    if warning:
        warn_once(warning)
    return chat


def build_prompt(spec: DatasetSection, row: dict[str, Any], chat: bool) -> str | list[dict]:
    """The prompt of one row, as the trainer will see it."""
    if spec.prompt is not None:
        try:
            text = spec.prompt.format(**row)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            shown = {k: v for k, v in row.items() if k in template_fields(spec.prompt)}
            raise UserError(
                f"dataset.prompt: cannot fill {spec.prompt!r} from the row {shown}: {describe(err)}"
            ) from err
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


def sft_target_problem(spec: DatasetSection, columns: list[str]) -> str | None:
    """Why an SFT dataset has nothing to learn, if so: no `dataset.completion`, `completion` or `messages` column."""
    if spec.completion is not None or "completion" in columns or "messages" in columns:
        return None
    return (
        f"dataset: SFT needs a target: set dataset.completion to a template over the columns ({', '.join(columns)}), "
        'e.g. completion: "{' + columns[-1] + '}", or provide a `completion` or chat `messages` column'
    )


def build_completion(spec: DatasetSection, row: dict[str, Any], chat: bool) -> str | list[dict]:
    """The SFT target of one row: `dataset.completion` filled from the row, else its `completion` column."""
    if spec.completion is not None:
        try:
            text = spec.completion.format(**row)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise UserError(
                f"dataset.completion: cannot fill {spec.completion!r} from the row: {describe(err)}"
            ) from err
    else:
        text = row["completion"]
    if isinstance(text, str) and chat:
        return [{"role": "assistant", "content": text}]
    return text


def prepare_sft(dataset: Dataset, spec: DatasetSection, tokenizer) -> Dataset:
    """SFT rows as TRL's SFTTrainer reads prompt-completion data (`prompt`, `completion`): its loss then covers
    the completion only. A chat `messages` column is split into the conversation and its last (assistant) turn."""
    from datasets import Dataset

    if len(dataset) == 0:
        raise UserError("dataset: no rows (check dataset.source, dataset.split and dataset.limit)")
    problem = sft_target_problem(spec, dataset.column_names)
    if problem:
        raise UserError(problem)
    chat = uses_chat(spec, tokenizer)
    rows = []
    for row in dataset:
        if spec.completion is None and "completion" not in row:  # a `messages` conversation
            messages = list(row["messages"])
            if not messages or messages[-1].get("role") != "assistant":
                raise UserError(
                    "dataset: each `messages` conversation must end with the assistant's turn to learn"
                )
            if not chat:
                raise UserError("dataset: a `messages` column needs a tokenizer with a chat template")
            prompt = [m for m in messages[:-1]]
            if spec.system_prompt and not any(m.get("role") == "system" for m in prompt):
                prompt = [{"role": "system", "content": spec.system_prompt}, *prompt]
            rows.append({"prompt": prompt, "completion": [messages[-1]]})
        else:
            rows.append(
                {"prompt": build_prompt(spec, row, chat), "completion": build_completion(spec, row, chat)}
            )
    return Dataset.from_list(rows)


PREFERENCE_COLUMNS = ("chosen", "rejected")


def preference_problems(spec: DatasetSection, columns: list[str]) -> list[str]:
    """What a reward run's preference data lacks: a `chosen` and a `rejected` column."""
    return [
        f"dataset: reward training needs a {name!r} column (the {'preferred' if name == 'chosen' else 'worse'} "
        f"answer to each prompt); columns: {', '.join(columns)}"
        for name in PREFERENCE_COLUMNS
        if name not in columns
    ]


def prepare_preferences(dataset: Dataset, spec: DatasetSection, tokenizer) -> Dataset:
    """Preference rows as a reward model reads them: `prompt` (built as `prepare` builds it for GRPO and PPO; empty
    when the data has none), `chosen`, `rejected`.

    Chat or text is decided as for those stages (`uses_chat`), not by the answers' type: GRPO and PPO give a chat
    prompt to a chat tokenizer whatever the data, and a `model:` reward then reads the chat template's rendering
    of prompt + reply. So under a chat template a text answer becomes one assistant message, and without one (or
    with dataset.chat_template: false) message answers become their text, as the policy's replies would be.
    """
    from datasets import Dataset

    if len(dataset) == 0:
        raise UserError("dataset: no rows (check dataset.source, dataset.split and dataset.limit)")
    problems = preference_problems(spec, dataset.column_names)
    if problems:
        raise UserError(problems[0])
    chat = chat_for(spec, tokenizer, dataset[0])
    rows = []
    for row in dataset:
        if spec.prompt is not None or "prompt" in row or "messages" in row:
            prompt = build_prompt(spec, row, chat)
        else:
            prompt = [] if chat else ""
        rows.append(
            {
                "prompt": prompt,
                "chosen": _answer(row["chosen"], chat),
                "rejected": _answer(row["rejected"], chat),
            }
        )
    return Dataset.from_list(rows)


def _answer(answer: str | list[dict], chat: bool) -> str | list[dict]:
    """A preferred or worse answer as the policy's reply would be: one assistant message in chat, else text."""
    if chat:
        return [{"role": "assistant", "content": answer}] if isinstance(answer, str) else list(answer)
    return answer if isinstance(answer, str) else "\n\n".join(m["content"] for m in answer)


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
    chat = chat_for(spec, tokenizer, dataset[0])
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
