"""`grpo-cli rewards ls` and `grpo-cli rewards test`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from grpo_cli.errors import UserError


def ls() -> None:
    """List every reward a recipe can name: built-ins and installed plugins, with arguments and a description."""
    from rich.console import Console
    from rich.table import Table

    from grpo_cli import plugins

    table = Table("name", "from", "arguments", "columns", "description", box=None)
    for name, spec in sorted(plugins.available().items()):
        try:
            params = spec.parameters()
            arguments = ", ".join(
                n if p.default is p.empty else f"{n}={p.default!r}" for n, p in params.items()
            )
            columns = (
                ", ".join(plugins.required_columns(spec.target)) if not isinstance(spec.target, type) else ""
            )
            description = spec.description
        except UserError as err:
            arguments, columns, description = "", "", f"[red]{err}[/red]"
        table.add_row(name, spec.origin, arguments, columns, description)
    console = Console()
    console.print(table)
    console.print(
        "\nAlso: path/to/file.py:attr, package.module:attr, or model:<Hub id or dir> for a reward model.",
        style="dim",
    )


def _parse_pairs(pairs: list[str], what: str) -> dict[str, object]:
    import yaml

    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"bad {what} {pair!r}: write NAME=VALUE")
        parsed[key] = yaml.safe_load(value) if value else ""
    return parsed


def _read_completions(path: Path) -> list[dict]:
    """One completion per line, or JSONL objects with `completion` and optionally `row` (a dataset row index)."""
    if not path.is_file():
        raise UserError(f"completions file not found: {path}")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: invalid JSON: {err.msg}") from err
            if "completion" not in item:
                raise UserError(f"{path}:{number}: a JSON line needs a `completion` key")
            items.append(item)
        else:
            items.append({"completion": line})
    if not items:
        raise UserError(f"{path} holds no completions")
    return items


def advantages(totals: list[float], scale: bool) -> list[float]:
    """GRPO's advantage of each completion in one group: score minus the group mean, over the std if `scale`.

    The same arithmetic as TRL's GRPOTrainer (unbiased std, 1e-4 added to it).
    """
    mean = sum(totals) / len(totals)
    diffs = [t - mean for t in totals]
    if not scale or len(totals) < 2:
        return diffs
    std = (sum(d * d for d in diffs) / (len(totals) - 1)) ** 0.5
    return [d / (std + 1e-4) for d in diffs]


def test(
    completions: list[str] = typer.Option(
        [], "--completion", "-c", help="A completion to score (repeat for a group)."
    ),
    prompt: str = typer.Option("", "--prompt", "-p", help="The prompt the completions answer."),
    reward: list[str] = typer.Option(
        [], "--reward", "-r", help="A reward name (repeat); default: the recipe's rewards."
    ),
    arg: list[str] = typer.Option([], "--arg", help="NAME=VALUE argument for the --reward rewards (repeat)."),
    column: list[str] = typer.Option(
        [], "--column", help="NAME=VALUE dataset column value, e.g. answer=5 (repeat)."
    ),
    recipe: str | None = typer.Option(
        None, "--recipe", help="Score with this recipe's rewards, against its dataset rows."
    ),
    completions_file: Path | None = typer.Option(
        None, "--completions-file", "-f", help="Completions, one per line or JSONL {completion, row}."
    ),
    row: int = typer.Option(0, "--row", help="With --recipe: the dataset row plain completions answer."),
    scale: bool | None = typer.Option(
        None,
        "--scale/--no-scale",
        help="Divide advantages by the group std (default: the recipe's trainer.scale_rewards, else yes).",
    ),
) -> None:
    """Score completions without training: each reward, the weighted total, and the GRPO advantage in the group.

    Example: grpo-cli rewards test -r reasoned_accuracy --prompt "What is 2 + 3?" --column answer=5 -c 5 -c 6 -c "2 + 3 = 5"
    """
    from rich.console import Console
    from rich.table import Table

    from grpo_cli import plugins
    from grpo_cli.recipe import RewardEntry

    items = [{"completion": c} for c in completions]
    if completions_file is not None:
        items += _read_completions(completions_file)
    if not items:
        raise UserError("no completions: give --completion TEXT (repeatable) or --completions-file FILE")

    if recipe is not None:
        from grpo_cli import data
        from grpo_cli.recipe import load_recipe

        loaded = load_recipe(recipe)
        entries = loaded.rewards
        if scale is None:
            scale = loaded.trainer.get("scale_rewards", "group") != "none"
        rows, _ = data.load_splits(loaded.dataset, loaded.seed)
        for item in items:
            index = item.get("row", row)
            if not 0 <= index < len(rows):
                raise UserError(f"--row {index}: the dataset has rows 0..{len(rows) - 1}")
            record = dict(rows[index])
            item["row"] = index
            item["prompt"] = item.get("prompt") or (
                data.build_prompt(loaded.dataset, record, chat=False)
                if "prompt" not in record
                else record["prompt"]
            )
            item["columns"] = record
    else:
        if not reward:
            raise UserError(
                "name the rewards with --reward NAME (see `grpo-cli rewards ls`), or give --recipe"
            )
        args = _parse_pairs(arg, "--arg")
        entries = [RewardEntry(name=name, args=args if len(reward) == 1 else {}) for name in reward]
        if args and len(reward) > 1:
            raise UserError(
                "--arg applies to a single --reward; use a recipe to give several rewards arguments"
            )
        values = _parse_pairs(column, "--column")
        for item in items:
            item.update(prompt=item.get("prompt", prompt), columns=values, row=0)
        scale = True if scale is None else scale

    bound = plugins.bind_all(entries)
    functions = [b for b in bound if b.fn is not None]
    if len(functions) < len(bound):
        raise UserError("rewards test scores reward functions; reward models are scored in training only")

    console = Console()
    groups: dict[int, list[dict]] = {}
    for item in items:
        groups.setdefault(item["row"], []).append(item)
    for index, group in groups.items():
        columns = {k: [item["columns"].get(k) for item in group] for k in group[0]["columns"]}
        table_scores = plugins.score_table(
            functions, [i["prompt"] for i in group], [i["completion"] for i in group], columns
        )
        totals = plugins.weighted_total(functions, table_scores)
        advantage = advantages(totals, scale)
        title = f"prompt: {group[0]['prompt']!r}" + (f" (row {index})" if recipe else "")
        table = Table(title=title, title_justify="left")
        table.add_column("completion")
        for b in functions:
            weight = f" x{b.entry.weight:g}" if b.entry.weight != 1 else ""
            table.add_column(f"{b.name}{weight}", justify="right")
        table.add_column("total", justify="right")
        table.add_column("advantage" + (" (/std)" if scale else ""), justify="right")
        for i, item in enumerate(group):
            cells = [_fmt(scores[i]) for scores in table_scores]
            table.add_row(repr(item["completion"]), *cells, _fmt(totals[i]), f"{advantage[i]:+.3f}")
        console.print(table)


def _fmt(value) -> str:
    return "None" if value is None else f"{value:g}"
