"""`grpo-cli rewards ls` and `grpo-cli rewards test`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.errors import UserError


def ls() -> None:
    """List every reward a recipe can name: built-ins and installed plugins, with arguments and a description."""
    from grpo_cli import reward_binding

    builtins, installed = reward_binding.REWARDS.builtins(), reward_binding.REWARDS.installed()
    for name, spec in sorted(reward_binding.REWARDS.available().items()):
        typer.echo(_describe(name, spec))
    for name, spec in sorted(installed.items()):
        if name in builtins:
            typer.echo(
                f"{name}  {_origin(spec)}: unused, the built-in {name!r} comes first; "
                f"name it as {spec.source} instead"
            )
    typer.echo(
        "\nalso: path/to/file.py:function (relative to the recipe), package.module:function, "
        "or model:<Hub id or dir> for a reward model."
    )


def _origin(spec) -> str:
    return f"from {spec.dist} ({spec.source})" if spec.dist else spec.origin


def _describe(name: str, spec) -> str:
    """One reward as `rewards ls` shows it: name and origin, description, arguments, the columns it reads."""
    from grpo_cli import signatures

    lines = [f"{name}  {_origin(spec)}"]
    try:
        target = spec.target
        params = spec.parameters()
        # A function's parameters without a default are columns; a factory's are all arguments (the columns of
        # the reward it returns are known once it is called).
        factory = signatures.is_factory(target)
        if not inspect.isclass(target) and not factory:
            params = {n: p for n, p in params.items() if p.default is not p.empty}
        arguments = ", ".join(n if p.default is p.empty else f"{n}={p.default!r}" for n, p in params.items())
        columns = "" if factory else ", ".join(signatures.required_columns(target))
        lines.append(f"    {spec.description or '(no docstring)'}")
        lines.append(f"    args: {arguments or 'none'}")
        if columns:
            lines.append(f"    reads columns: {columns}")
    except UserError as err:
        lines.append(f"    cannot be used: {err}")
    return "\n".join(lines)


# ---- rewards test ----


def _parse_args(pairs: list[str]) -> dict[str, object]:
    """--arg NAME=VALUE, the value read as a recipe's `args` value is (`5e-1` a float); `NAME=` is empty text."""
    from grpo_cli.recipe_files import parse_assignment

    parsed = {}
    for pair in pairs:
        key, value = parse_assignment(pair, "--arg", "scale=2")
        parsed[key] = "" if pair.endswith("=") else value
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


COMPLETION_LINE = 'an object with a "completion" key, or "messages" (a transcript)'  # what each line of a .jsonl completions file is


def _read_completions(path: Path) -> list[dict]:
    """A .jsonl file: one JSON object per line with `completion` and optionally `row`, `prompt` and column values.
    Any other file: one completion per line (blank lines skipped)."""
    from grpo_cli.data_formats import jsonl_objects

    if not path.is_file():
        raise UserError(f"completions file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() != ".jsonl":
        lines = [line for line in text.splitlines() if line.strip()]
        items = [{"completion": line, "row": None, "prompt": None, "columns": {}} for line in lines]
    else:
        items = [
            _completion_item(path, number, item)
            for number, item in jsonl_objects(text, str(path), COMPLETION_LINE)
        ]
    if not items:
        raise UserError(f"{path} holds no completions")
    return items


def _completion_item(path: Path, number: int, item: dict) -> dict:
    """One line of a .jsonl completions file: its completion, row, prompt and the rest (column values)."""
    if (
        "messages" in item and "completion" not in item
    ):  # a saved transcript: prompt turns, then the rollout's
        from grpo_cli.prompting import split_transcript

        split = split_transcript(item.pop("messages"))
        if split is None:
            raise UserError(
                f'{path}:{number}: "messages" must be a list of {{role, content}} with an assistant turn'
            )
        item["prompt"], item["completion"] = split
    if "completion" not in item:
        raise UserError(f"{path}:{number}: each line must be {COMPLETION_LINE}")
    row = item.get("row")
    if row is not None and (not isinstance(row, int) or isinstance(row, bool)):
        raise UserError(f'{path}:{number}: "row" must be a dataset row number, got {row!r}')
    completion = item.pop("completion")
    return {
        "completion": completion,
        "row": item.pop("row", None),
        "prompt": item.pop("prompt", None),
        "columns": item,  # the rest: column values for this completion
    }


def test(
    completions: Annotated[
        list[str] | None,
        typer.Option(
            "--completion", "-c", metavar="TEXT", help="A completion to score (repeat for a group)."
        ),
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", metavar="TEXT", help="The prompt the completions answer.")
    ] = None,
    reward: Annotated[
        list[str] | None,
        typer.Option(
            "--reward",
            "-r",
            metavar="NAME",
            help="A reward name (repeat); with --recipe, instead of the recipe's rewards.",
        ),
    ] = None,
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            metavar="NAME=VALUE",
            help="An argument (read as YAML, as a recipe's args are) for a single --reward (repeat).",
        ),
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            metavar="NAME=VALUE",
            help="A dataset column's value, e.g. answer=5 (text; JSON for a list or object); repeat. "
            "With --recipe it replaces the row's value.",
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", metavar="RECIPE", help="Score with this recipe's rewards, against its dataset rows."
        ),
    ] = None,
    completions_file: Annotated[
        Path | None,
        typer.Option(
            "--completions-file",
            "-f",
            metavar="FILE",
            help="Completions: one per line, or a .jsonl file of {completion, row, prompt, <column>: value} "
            "objects ({messages: [...]} for a transcript: the prompt's turns, then the assistant's and tools').",
        ),
    ] = None,
    row: Annotated[
        int | None,
        typer.Option(
            "--row",
            metavar="N",
            help="With --recipe: the row of the dataset file the completions answer, counted from 0 before any "
            "shuffle or held-out split (default 0).",
        ),
    ] = None,
    scale: Annotated[
        bool | None,
        typer.Option(
            "--scale/--no-scale",
            help="Divide advantages by the group's std (default: the recipe's trainer.scale_rewards, else yes).",
        ),
    ] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="Without --recipe: pass prompts and completions as chat messages (lists of {role, content}), "
            "as training does for chat data (TRL's think_format_reward and accuracy_reward read those).",
        ),
    ] = False,
    tokenizer_name: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            metavar="DIR",
            help="The tokenizer (a directory or Hub id) whose token ids rewards get as completion_ids (default: "
            "the recipe's policy tokenizer; without a recipe, one id per character, its code point).",
        ),
    ] = None,
    step: Annotated[
        int,
        typer.Option(
            "--step",
            min=0,
            metavar="N",
            help="trainer_state.global_step the rewards see (max_steps is the recipe's trainer.max_steps, "
            "else 0).",
        ),
    ] = 0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object per completion instead of tables: completion, scores (reward -> score), "
            "total, advantage, and verdict / details (reward -> value) where a reward gives them.",
        ),
    ] = False,
) -> None:
    """Score completions without training: each reward, the weighted total, and the GRPO advantage in the group.

    Rewards get what GRPO training gives them: the columns, completion_ids, a trainer_state, log_metric and
    log_extra (what they log is shown under the table).

    Example: grpo-cli rewards test -r reasoned_accuracy --prompt "What is 2 + 3?" --column answer=5 -c 5 -c 6 -c "2 + 3 = 5"
    """
    from grpo_cli import (
        grpo_advantages,
        reward_binding,
        reward_models,
        reward_workers,
        scoring,
        trainer_fields,
    )
    from grpo_cli.commands import rewards_output
    from grpo_cli.recipe import RewardEntry
    from grpo_cli.trainer_fields import fields

    completions, reward, arg, column = completions or [], reward or [], arg or [], column or []
    items = [{"completion": c, "row": None, "prompt": None, "columns": {}} for c in completions]
    if completions_file is not None:
        items += _read_completions(completions_file)
    if not items:
        raise UserError("no completions: give --completion TEXT (repeatable) or --completions-file FILE")
    if len(reward) > 1 and arg:
        raise UserError("--arg applies to a single --reward; use a recipe to give several rewards arguments")
    entries = [RewardEntry(name=name, args=_parse_args(arg)) for name in reward]
    given_columns = _parse_columns(column)
    # The advantage shown is GRPO's, so TRL's GRPOConfig defaults apply where the recipe sets nothing.
    grpo_defaults = fields("grpo")
    trainer, dtype, chat_template_kwargs, trust_remote_code = {}, "auto", {}, False
    tokenizer = None
    if tokenizer_name is not None:
        from grpo_cli import models

        tokenizer = models.load_tokenizer(tokenizer_name, trust_remote_code=False)  # no recipe says otherwise

    if recipe is not None:
        from grpo_cli.recipe import load_recipe

        if chat:
            raise UserError(
                "--chat is for scoring without a recipe: with --recipe, prompts and completions take the shape "
                "its dataset gives in training"
            )
        loaded = load_recipe(recipe)
        entries = entries or loaded.rewards
        if not entries:
            raise UserError(f"{recipe} names no rewards; add some, or give --reward NAME")
        trainer, dtype = loaded.trainer, loaded.model.dtype
        trust_remote_code = loaded.model.trust_remote_code
        # What GRPOTrainer passes to the chat template for reward models.
        chat_template_kwargs = trainer_fields.chat_template_kwargs(loaded)
        policy_tokenizer = _fill_from_rows(items, loaded, prompt, row, given_columns)
        tokenizer = tokenizer if tokenizer is not None else policy_tokenizer
    else:
        if not entries:
            raise UserError(
                "name the rewards with --reward NAME (see `grpo-cli rewards ls`), or give --recipe"
            )
        if row is not None or any(item["row"] is not None for item in items):
            raise UserError("a row number needs --recipe: the row of its dataset the completions answer")
        for item in items:
            item.update(row=0, prompt=item["prompt"] if item["prompt"] is not None else (prompt or ""))
            if chat and isinstance(item["prompt"], str):
                item["prompt"] = [{"role": "user", "content": item["prompt"]}]
            item["columns"] = {**given_columns, **item["columns"]}
    mode = grpo_advantages.scale_mode(trainer.get("scale_rewards", grpo_defaults["scale_rewards"].default))
    aggregation = trainer.get(
        "multi_objective_aggregation", grpo_defaults["multi_objective_aggregation"].default
    )
    if scale is not None:
        mode = "group" if scale else "none"

    bound = reward_binding.bind_all(entries)
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
    bound = reward_models.load_reward_models(
        bound,
        dtype,
        chat_template_kwargs=chat_template_kwargs,
        trust_remote_code=trust_remote_code,
    )

    max_steps = trainer.get("max_steps", 0)
    state = scoring.run_state(step, max_steps if isinstance(max_steps, int) and max_steps > 0 else 0)
    groups: dict[int, list[dict]] = {}
    for item in items:
        groups.setdefault(item["row"], []).append(item)
    logs = [scoring.RewardLog() for _ in groups]
    calls = [scoring.RewardCall(b) for b in bound]  # one worker process each for `isolation: process` rewards
    try:
        tables = [
            _score_group(calls, group, tokenizer, state, log)
            for group, log in zip(groups.values(), logs, strict=True)
        ]
    finally:
        reward_workers.shutdown_all()
    weights = [b.entry.weight for b in bound]
    group_advantages = grpo_advantages.advantages(tables, weights, mode, aggregation)

    header = {"group": "advantage (/std)", "batch": "advantage (/batch std)", "none": "advantage"}[mode]
    if aggregation == "normalize_then_sum":
        header = "advantage (normalize_then_sum)"
    if as_json:
        for line in rewards_output.json_lines(groups, tables, group_advantages, logs, bound):
            typer.echo(line)
    else:
        rewards_output.print_groups(
            groups, tables, group_advantages, logs, bound, header=header, recipe=bool(recipe)
        )


def _fill_from_rows(items: list[dict], recipe, prompt: str | None, row: int | None, columns: dict):
    """Give each item its dataset row (its own `row`, else --row, else 0), the prompt that row has in training
    (or the given one, built the same way) and the row's columns, under the given `columns`. Returns the
    policy's tokenizer."""
    import datasets

    from grpo_cli import models, prompting

    datasets.disable_progress_bars()  # the table is the output
    rows = _file_rows(recipe)
    # Prompts as the trainer sees them: messages when the policy's tokenizer has a chat template.
    tokenizer = models.policy_tokenizer(recipe.model)
    chat = prompting.uses_chat(recipe.dataset, tokenizer)
    for item in items:
        index = item["row"] if item["row"] is not None else (row or 0)
        if not 0 <= index < len(rows):
            raise UserError(f"row {index}: the dataset's rows are 0..{len(rows) - 1}")
        record = dict(rows[index])
        item["row"] = index
        if item["prompt"] is None and prompt is None:
            item["prompt"] = prompting.build_prompt(recipe.dataset, record, chat)
        else:
            given = item["prompt"] if item["prompt"] is not None else prompt
            item["prompt"] = _as_prompt(recipe.dataset, given, chat)
        item["columns"] = {**record, **columns, **item["columns"]}
    return tokenizer


def _file_rows(recipe):
    """The dataset as loaded, in the file's order: `--row N` counts these, before any shuffle or held-out split."""
    from grpo_cli import data

    whole = recipe.dataset.model_copy(
        update={"eval_split": None, "eval_ratio": None, "eval_size": None, "limit": None}
    )
    return data.load_splits(whole, recipe.seed)[0]


def _as_prompt(spec, text, chat: bool):
    """A prompt given as text (--prompt, or a .jsonl `prompt`), built as prompting.py builds a row's: as the user's
    message, after the recipe's system prompt, for chat data. A message list is taken as it is."""
    from grpo_cli import prompting

    if not isinstance(text, str):
        return text
    # Through build_prompt itself, with the text as the whole template's value: one way to build prompts.
    return prompting.build_prompt(spec.model_copy(update={"prompt": "{text}"}), {"text": text}, chat)


def _score_group(calls, group: list[dict], tokenizer, state, log) -> list[list[float | None]]:
    """Each reward's scores of one group's completions, as TRL passes them: a completion is text for a text
    prompt and an assistant message for a chat prompt; the columns are all but the prompt; `completion_ids` are
    the completions' ids in `tokenizer` (see scoring.text_ids)."""
    from grpo_cli import prompting, scoring

    names = list(dict.fromkeys(k for item in group for k in item["columns"]))
    columns = {
        k: [item["columns"].get(k) for item in group] for k in names if k not in ("prompt", "completion")
    }
    prompts = [item["prompt"] for item in group]
    completions = [
        prompting.as_completion(item["completion"], isinstance(p, list))
        for p, item in zip(prompts, group, strict=True)
    ]
    ids = scoring.text_ids(completions, tokenizer)
    return scoring.score_table(
        calls, prompts, completions, columns, completion_ids=ids, trainer_state=state, log=log
    )
