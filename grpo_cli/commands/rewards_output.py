"""What `grpo-cli rewards test` prints: a table per group of completions, or one JSON object per completion."""

from __future__ import annotations

import json

from grpo_cli.errors import shorten


def print_groups(groups, tables, advantages, logs, bound, *, header: str, recipe: bool) -> None:
    """One table per group: each reward's score, the total, the advantage, and what the rewards logged."""
    from rich.markup import escape
    from rich.table import Table

    from grpo_cli import scoring
    from grpo_cli.commands._common import print_table, stdout_console

    console = stdout_console()
    for (index, group), table_scores, advantage, log in zip(
        groups.items(), tables, advantages, logs, strict=True
    ):
        totals = scoring.weighted_total(bound, table_scores)
        unscorable = [all(scores[i] is None for scores in table_scores) for i in range(len(group))]
        title = f"prompt: {shorten(group[0]['prompt'])}" + (f" (row {index})" if recipe else "")
        no_prompt = not recipe and not any(item["prompt"] for item in group)
        table = Table(title=None if no_prompt else escape(title), title_justify="left")
        table.add_column("completion")
        for b in bound:
            weight = f" x{b.entry.weight:g}" if b.entry.weight != 1 else ""
            table.add_column(escape(f"{b.name}{weight}"), justify="right")
        table.add_column("total", justify="right")
        table.add_column(header, justify="right")
        extra = log.take_extra(len(group))
        for column in extra:
            table.add_column(escape(column))
        for i, item in enumerate(group):
            cells = [_fmt(scores[i]) for scores in table_scores]
            total = "None" if unscorable[i] else _fmt(totals[i])
            logged = [escape(str(values[i])) for values in extra.values()]
            table.add_row(escape(repr(item["completion"])), *cells, total, f"{advantage[i]:+.3f}", *logged)
        print_table(table)
        metrics = log.take_metrics()
        if metrics:
            console.print(escape("log_metric: " + ", ".join(f"{k}={v:g}" for k, v in metrics.items())))


def json_lines(groups, tables, advantages, logs, bound) -> list[str]:
    """One JSON object per completion, groups in order: `completion`, `scores` (reward name -> score), `total`
    (None when no reward scored it), `advantage`, then where rewards gave them `verdict` and `details` (reward name
    -> value) and `extra` (any other `log_extra` column -> value). What rewards log through `log_metric` is not
    per completion: `metrics` on each object of its group."""
    from grpo_cli import scoring

    names = [b.name for b in bound]
    lines = []
    for group, table_scores, advantage, log in zip(groups.values(), tables, advantages, logs, strict=True):
        totals = scoring.weighted_total(bound, table_scores)
        extra = log.take_extra(len(group))
        metrics = log.take_metrics()
        for i, item in enumerate(group):
            scores = {name: scores[i] for name, scores in zip(names, table_scores, strict=True)}
            record = {
                "completion": item["completion"],
                "scores": scores,
                "total": None if all(s is None for s in scores.values()) else totals[i],
                "advantage": advantage[i],
            }
            rest = {}
            for column, values in extra.items():
                reward, _, kind = column.rpartition("/")
                if kind in scoring.EXPLAINED and reward in names:  # logged as `<reward>/verdict`: see scoring
                    record.setdefault(kind, {})[reward] = values[i]
                else:
                    rest[column] = values[i]
            if rest:
                record["extra"] = rest
            if metrics:
                record["metrics"] = metrics
            lines.append(json.dumps(record, ensure_ascii=False, default=str))
    return lines


def _fmt(value) -> str:
    return "None" if value is None else f"{value:g}"
