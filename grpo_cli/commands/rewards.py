"""`grpo-cli rewards ls` and `grpo-cli rewards test`."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import typer

from grpo_cli.errors import UserError


def ls() -> None:
    """List every reward a recipe can name: built-ins and installed plugins, with arguments and a description."""
    from grpo_cli import plugins

    builtins, installed = plugins.builtin_rewards(), plugins.installed_plugins()
    for name, spec in sorted(plugins.available().items()):
        typer.echo(_describe(name, spec))
    for name, spec in sorted(installed.items()):
        if name in builtins:
            typer.echo(
                f"{name}  {_origin(spec)}: unused, the built-in {name!r} comes first; "
                f"name it as {spec.source} instead"
            )
    typer.echo(
        "\nAlso: path/to/file.py:function (relative to the recipe), package.module:function, "
        "or model:<Hub id or dir> for a reward model."
    )


def _origin(spec) -> str:
    return f"from {spec.dist} ({spec.source})" if spec.dist else spec.origin


def _describe(name: str, spec) -> str:
    """One reward as `rewards ls` shows it: name and origin, description, arguments, the columns it reads."""
    from grpo_cli import plugins

    lines = [f"{name}  {_origin(spec)}"]
    try:
        target = spec.target
        params = spec.parameters()
        if not inspect.isclass(target):  # a function's parameters without a default are columns
            params = {n: p for n, p in params.items() if p.default is not p.empty}
        arguments = ", ".join(n if p.default is p.empty else f"{n}={p.default!r}" for n, p in params.items())
        columns = ", ".join(plugins.required_columns(target))
        lines.append(f"    {spec.description or '(no docstring)'}")
        lines.append(f"    args: {arguments or 'none'}")
        if columns:
            lines.append(f"    reads columns: {columns}")
    except UserError as err:
        lines.append(f"    cannot be used: {err}")
    return "\n".join(lines)


# ---- rewards test ----


def _parse_args(pairs: list[str]) -> dict[str, object]:
    """--arg NAME=VALUE, the value read as YAML, as it would be in a recipe's `args`."""
    import yaml

    parsed = {}
    for key, value in _split_pairs(pairs, "--arg"):
        try:
            parsed[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed[key] = value
    return parsed


def _parse_columns(pairs: list[str]) -> dict[str, object]:
    """--column NAME=VALUE: text, as a dataset's text columns are, or JSON for a list or an object."""
    parsed = {}
    for key, value in _split_pairs(pairs, "--column"):
        parsed[key] = value
        if value.lstrip().startswith(("[", "{")):
            try:
                parsed[key] = json.loads(value)
            except json.JSONDecodeError as err:
                raise UserError(f"--column {key}: invalid JSON: {err.msg}") from err
    return parsed


def _split_pairs(pairs: list[str], what: str) -> list[tuple[str, str]]:
    split = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"bad {what} {pair!r}: write NAME=VALUE")
        split.append((key, value))
    return split


def _read_completions(path: Path) -> list[dict]:
    """A .jsonl file: one JSON object per line with `completion` and optionally `row`, `prompt` and column values.
    Any other file: one completion per line (blank lines skipped)."""
    if not path.is_file():
        raise UserError(f"completions file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            items.append({"completion": line, "row": None, "prompt": None, "columns": {}})
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: invalid JSON: {err.msg}") from err
        if not isinstance(item, dict) or "completion" not in item:
            raise UserError(f'{path}:{number}: each line must be an object with a "completion" key')
        row = item.get("row")
        if row is not None and (not isinstance(row, int) or isinstance(row, bool)):
            raise UserError(f'{path}:{number}: "row" must be a dataset row number, got {row!r}')
        completion = item.pop("completion")
        items.append(
            {
                "completion": completion,
                "row": item.pop("row", None),
                "prompt": item.pop("prompt", None),
                "columns": item,  # the rest: column values for this completion
            }
        )
    if not items:
        raise UserError(f"{path} holds no completions")
    return items


def _std(values: list[float | None]) -> float:
    """The unbiased standard deviation of the values that are not None, NaN for fewer than two (TRL's nanstd)."""
    valid = [v for v in values if v is not None]
    if len(valid) < 2:
        return math.nan
    mean = sum(valid) / len(valid)
    return (sum((v - mean) ** 2 for v in valid) / (len(valid) - 1)) ** 0.5


def _mean(values: list[float | None]) -> float:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else math.nan


def _normalise(values: list[float | None], mean: float, std: float | None) -> list[float | None]:
    """(v - mean) / (std + 1e-4), or v - mean when std is None; None stays None."""
    if std is None:
        return [None if v is None else v - mean for v in values]
    return [None if v is None else (v - mean) / (std + 1e-4) for v in values]  # NaN when std is NaN


def advantages(
    tables: list[list[list[float | None]]],
    weights: list[float],
    scale: str = "group",
    aggregation: str = "sum_then_normalize",
) -> list[list[float]]:
    """GRPO's advantage of every completion, computed as TRL 1.12's GRPOTrainer does.

    `tables[g][k][i]` is reward k's score of completion i in group g (the completions of one prompt), None where
    the reward does not apply. `scale` is the recipe's `trainer.scale_rewards`: "group" divides by the group's
    std, "batch" by the std over all groups, "none" not at all (std unbiased, plus 1e-4). A completion that every
    reward gave None is left out of its group's statistics and gets 0, as does anything divided by the std of
    fewer than two values.
    """

    def weighted(scores) -> float | None:  # TRL's nansum over the rewards; None when no reward applies
        valid = [(w, s) for w, s in zip(weights, scores, strict=True) if s is not None and not math.isnan(s)]
        return sum(w * s for w, s in valid) if valid else None

    unscorable = [[all(s is None for s in column) for column in zip(*table, strict=True)] for table in tables]
    if aggregation == "sum_then_normalize":
        totals = [[weighted(column) for column in zip(*table, strict=True)] for table in tables]
        batch_std = _std([t for group in totals for t in group])
        result = []
        for group in totals:
            std = {"group": _std(group), "batch": batch_std, "none": None}[scale]
            result.append(_normalise(group, _mean(group), std))
    elif aggregation == "normalize_then_sum":
        # Each reward normalised within its group, then weighted and summed, then the sums over the whole batch.
        totals = []
        for table, skip in zip(tables, unscorable, strict=True):
            normalised = [_normalise(scores, _mean(scores), _std(scores)) for scores in table]
            sums = [weighted(column) for column in zip(*normalised, strict=True)]
            totals.append([None if s else (t or 0.0) for t, s in zip(sums, skip, strict=True)])
        everything = [t for group in totals for t in group]
        result = [_normalise(group, _mean(everything), _std(everything)) for group in totals]
    else:
        raise UserError(
            f"trainer.multi_objective_aggregation: {aggregation!r} is not sum_then_normalize or normalize_then_sum"
        )
    return [[0.0 if a is None or math.isnan(a) else a for a in group] for group in result]


def _scale_mode(value) -> str:
    """A recipe's trainer.scale_rewards as TRL reads it (True and False are its older spellings)."""
    mode = {True: "group", False: "none"}.get(value, value) if isinstance(value, bool) else value
    if mode not in ("group", "batch", "none"):
        raise UserError(f"trainer.scale_rewards: {value!r} is not group, batch or none")
    return mode


def test(
    completions: list[str] = typer.Option(
        [], "--completion", "-c", help="A completion to score (repeat for a group)."
    ),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="The prompt the completions answer."),
    reward: list[str] = typer.Option(
        [], "--reward", "-r", help="A reward name (repeat); with --recipe, instead of the recipe's rewards."
    ),
    arg: list[str] = typer.Option(
        [], "--arg", help="NAME=VALUE argument (read as YAML) for a single --reward (repeat)."
    ),
    column: list[str] = typer.Option(
        [],
        "--column",
        help="NAME=VALUE dataset column value, e.g. answer=5 (text; JSON for a list or object); repeat. "
        "With --recipe it replaces the row's value.",
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Score with this recipe's rewards, against its dataset rows."
    ),
    completions_file: Path | None = typer.Option(
        None,
        "--completions-file",
        "-f",
        help="Completions: one per line, or a .jsonl file of {completion, row, prompt, <column>: value} objects.",
    ),
    row: int | None = typer.Option(
        None, "--row", help="With --recipe: the dataset row the completions answer (default 0)."
    ),
    scale: bool | None = typer.Option(
        None,
        "--scale/--no-scale",
        help="Divide advantages by the group's std (default: the recipe's trainer.scale_rewards, else yes).",
    ),
) -> None:
    """Score completions without training: each reward, the weighted total, and the GRPO advantage in the group.

    Example: grpo-cli rewards test -r reasoned_accuracy --prompt "What is 2 + 3?" --column answer=5 -c 5 -c 6 -c "2 + 3 = 5"
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from grpo_cli import plugins
    from grpo_cli.recipe import RewardEntry

    items = [{"completion": c, "row": None, "prompt": None, "columns": {}} for c in completions]
    if completions_file is not None:
        items += _read_completions(completions_file)
    if not items:
        raise UserError("no completions: give --completion TEXT (repeatable) or --completions-file FILE")
    if len(reward) > 1 and arg:
        raise UserError("--arg applies to a single --reward; use a recipe to give several rewards arguments")
    entries = [RewardEntry(name=name, args=_parse_args(arg)) for name in reward]
    given_columns = _parse_columns(column)
    aggregation = "sum_then_normalize"

    if recipe is not None:
        from grpo_cli import data
        from grpo_cli.recipe import load_recipe

        loaded = load_recipe(recipe)
        entries = entries or loaded.rewards
        if not entries:
            raise UserError(f"{recipe} names no rewards; add some, or give --reward NAME")
        mode = _scale_mode(loaded.trainer.get("scale_rewards", "group"))
        aggregation = loaded.trainer.get("multi_objective_aggregation", aggregation)
        import datasets

        datasets.disable_progress_bars()  # the table is the output
        rows, _ = data.load_splits(loaded.dataset, loaded.seed)
        for item in items:
            index = item["row"] if item["row"] is not None else (row or 0)
            if not 0 <= index < len(rows):
                raise UserError(f"row {index}: the dataset's rows are 0..{len(rows) - 1}")
            record = dict(rows[index])
            item["row"] = index
            if item["prompt"] is None:
                item["prompt"] = (
                    prompt if prompt is not None else data.build_prompt(loaded.dataset, record, chat=False)
                )
            item["columns"] = {**record, **given_columns, **item["columns"]}
    else:
        if not entries:
            raise UserError(
                "name the rewards with --reward NAME (see `grpo-cli rewards ls`), or give --recipe"
            )
        if row is not None or any(item["row"] is not None for item in items):
            raise UserError("a row number needs --recipe: the row of its dataset the completions answer")
        mode = "group"
        for item in items:
            item.update(row=0, prompt=item["prompt"] if item["prompt"] is not None else (prompt or ""))
            item["columns"] = {**given_columns, **item["columns"]}
    if scale is not None:
        mode = "group" if scale else "none"

    bound = plugins.bind_all(entries)
    if any(b.fn is None for b in bound):
        raise UserError("rewards test scores reward functions; reward models are scored in training only")
    known = {name for item in items for name in item["columns"]}
    for i, b in enumerate(bound):
        for name in b.columns:
            if name not in known and name != "prompt":
                how = (
                    f"which the dataset does not have; columns: {', '.join(known)}"
                    if recipe is not None
                    else f"give its value with --column {name}=VALUE"
                )
                raise UserError(f"rewards[{i}] ({b.entry.name}) reads column {name!r}, {how}")

    groups: dict[int, list[dict]] = {}
    for item in items:
        groups.setdefault(item["row"], []).append(item)
    tables = [_score_group(bound, group) for group in groups.values()]
    weights = [b.entry.weight for b in bound]
    group_advantages = advantages(tables, weights, mode, aggregation)

    console = Console()
    header = {"group": "advantage (/std)", "batch": "advantage (/batch std)", "none": "advantage"}[mode]
    if aggregation == "normalize_then_sum":
        header = "advantage (normalize_then_sum)"
    for (index, group), table_scores, advantage in zip(groups.items(), tables, group_advantages, strict=True):
        totals = plugins.weighted_total(bound, table_scores)
        unscorable = [all(scores[i] is None for scores in table_scores) for i in range(len(group))]
        title = f"prompt: {plugins.shorten(group[0]['prompt'])}" + (f" (row {index})" if recipe else "")
        no_prompt = recipe is None and not any(item["prompt"] for item in group)
        table = Table(title=None if no_prompt else escape(title), title_justify="left")
        table.add_column("completion")
        for b in bound:
            weight = f" x{b.entry.weight:g}" if b.entry.weight != 1 else ""
            table.add_column(escape(f"{b.name}{weight}"), justify="right")
        table.add_column("total", justify="right")
        table.add_column(header, justify="right")
        for i, item in enumerate(group):
            cells = [_fmt(scores[i]) for scores in table_scores]
            total = "None" if unscorable[i] else _fmt(totals[i])
            table.add_row(escape(repr(item["completion"])), *cells, total, f"{advantage[i]:+.3f}")
        console.print(table)


def _score_group(bound, group: list[dict]) -> list[list[float | None]]:
    """Each reward's scores of one group's completions, with columns as TRL passes them (all but the prompt)."""
    from grpo_cli import plugins

    names = list(dict.fromkeys(k for item in group for k in item["columns"]))
    columns = {
        k: [item["columns"].get(k) for item in group] for k in names if k not in ("prompt", "completion")
    }
    return plugins.score_table(
        bound, [item["prompt"] for item in group], [item["completion"] for item in group], columns
    )


def _fmt(value) -> str:
    return "None" if value is None else f"{value:g}"
