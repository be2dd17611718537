"""`grpo-cli generate`: try a model on prompts, a file of prompts, or in a chat, so tuned and base can be compared
by eye; with a recipe, its rewards score what comes out.

What you see is what `eval` scored: prompts are prepared with the recipe's `dataset:` section (its system prompt,
the chat template when the tokenizer has one, and a one-field prompt template filled with the typed text), and
decoded by `generation.generate` with `generation.sampling_settings` (greedy for one sample, the recipe's trainer
settings otherwise). The recipe is `--recipe`, else the run's own recipe.yaml (an export keeps it in its marker
file), else defaults (TRL's generation settings, no system prompt).

The model: a run directory (or a checkpoint in it), its base (`--base`), an exported directory, any saved model
directory or peft adapter, or a Hub id.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpo_cli import data, models, prompting, tool_binding, tool_calls, tool_loop
from grpo_cli.data_formats import jsonl_objects
from grpo_cli.errors import ConfigError, UserError
from grpo_cli.generation import Sample, Sampling, generate, sampling_settings
from grpo_cli.model_sources import ModelSource, resolve_models, run_root
from grpo_cli.models import load_source
from grpo_cli.recipe import ModelSection, Recipe, load_recipe, parse_recipe
from grpo_cli.recipe_files import apply_overrides
from grpo_cli.run_checks import looks_like_path
from grpo_cli.run_files import EXPORT_MARKER_FILE as MARKER
from grpo_cli.run_files import RECIPE_FILE, read_adapter_config, read_export_marker
from grpo_cli.trainer_fields import chat_template_kwargs, value
from grpo_cli.workflows.evaluate_generations import bind_rewards, evaluated_state, score


@dataclass
class Target:
    source: ModelSource
    recipe: Recipe  # prompt preparation, decoding and (with --recipe) rewards


# ---- what is tried ----


def resolve(
    name: str, *, base: bool = False, recipe: str | None = None, overrides: list[str] | None = None
) -> Target:
    """The model named by `name` (run, checkpoint, export, model dir, adapter dir or Hub id) and its recipe."""
    path = Path(name).expanduser()
    if not path.exists() and looks_like_path(name, Path.cwd()):  # never a Hub id: no network, no retries
        raise UserError(
            f"{name}: no such directory ({path.absolute()}); give a training run, an exported directory, "
            "a saved model or adapter, or a Hub id (org/name)"
        )
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{name} is a file; give a training run, an exported directory, a saved model or adapter"
        )
    overrides = overrides or []
    given = load_recipe(recipe, overrides) if recipe is not None else None
    run_dir = _run_dir(path)
    if run_dir is None and (path / MARKER).is_file():
        marker = read_export_marker(path) or {}
        exported_from = Path(marker.get("source") or "")
        if base:
            run_dir = _run_dir(exported_from)
            if run_dir is None:
                raise UserError(
                    f"--base: the run {path} was exported from ({exported_from}) is gone; name its base model instead"
                )
            path = exported_from
        else:
            saved = marker.get("recipe")
            own = None
            if isinstance(saved, dict):
                own = parse_recipe(apply_overrides(saved, overrides), source=str(path / MARKER))
            elif overrides and given is None:
                raise UserError(
                    f"KEY=VALUE overrides change a recipe, and {path} keeps none: give one with --recipe"
                )
            settings = given or own or default_recipe(str(path))
            return Target(_saved_model(path, settings), settings)
    if run_dir is not None:
        own = load_recipe(run_dir / "recipe.yaml", [] if given is not None else overrides)
        settings = given or own
        tuned, run_base = resolve_models(own, adapter=path, model=None)
        return Target(run_base if base else tuned, settings)
    if overrides and given is None:
        raise UserError(f"KEY=VALUE overrides change a recipe, and {name} has none: give one with --recipe")
    if base and not (path / "adapter_config.json").is_file():
        raise UserError(
            f"--base: {name} is not a training run, an export or an adapter, so it has no base to try"
        )
    settings = given or default_recipe(name)
    if path.is_dir():
        source = _saved_model(path, settings)
    else:  # a Hub id, loaded as the recipe's model would be
        source = ModelSource("recipe", spec=ModelSection(name_or_path=name, dtype=settings.model.dtype))
    if base:
        source = source.base
    return Target(source, settings)


def _run_dir(path: Path) -> Path | None:
    """The run `path` is, or whose checkpoint-N it is."""
    if not str(path) or not path.is_dir():
        return None
    root = run_root(path)
    return root if (root / RECIPE_FILE).is_file() else None


def _saved_model(path: Path, recipe: Recipe) -> ModelSource:
    """A model directory (config.json) or a peft adapter (adapter_config.json) on the base it names."""
    if (path / "adapter_config.json").is_file():
        config = read_adapter_config(path) or {}
        base_name = config.get("base_model_name_or_path")
        if not base_name:
            raise UserError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)")
        if (path / base_name).is_dir() and not Path(base_name).is_absolute():
            base_name = str((path / base_name).resolve())  # an export's own base_model/, wherever it now is
        spec = ModelSection(name_or_path=base_name, dtype=recipe.model.dtype)
        return ModelSource("adapter", path=path.resolve(), base=ModelSource("recipe", spec=spec))
    if (path / "config.json").is_file():
        spec = ModelSection(name_or_path=str(path), dtype=recipe.model.dtype)
        return ModelSource("model", path=path.resolve(), base=ModelSource("recipe", spec=spec))
    raise UserError(
        f"{path} holds no model: give a training run, an exported directory, a model saved with save_pretrained "
        "(config.json) or a peft adapter (adapter_config.json)"
    )


def default_recipe(model: str) -> Recipe:
    """Settings for a model that comes with no recipe: TRL's GRPO generation defaults, prompts as typed."""
    return Recipe.model_validate(
        {"model": {"name_or_path": model}, "dataset": {"source": "(prompts given to generate)"}}
    )


def sampling(
    recipe: Recipe,
    *,
    num_samples: int = 1,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
) -> Sampling:
    """eval's settings for the recipe, with the command line's changes: greedy unless sampling is asked for."""
    if num_samples < 1:
        raise UserError("--num-samples must be at least 1")
    if temperature is not None and temperature < 0:
        raise UserError("--temperature must be 0 (greedy) or more")
    if num_samples > 1 and temperature == 0:
        raise UserError("--num-samples above 1 samples: give a --temperature above 0 (0 is greedy)")
    settings = sampling_settings(recipe, num_samples)
    changes = {}
    if temperature:
        changes["temperature"] = temperature
    if max_new_tokens is not None:
        changes["max_new_tokens"] = max_new_tokens
    if seed is not None:
        changes["seed"] = seed
    return dataclasses.replace(settings, **changes, sample_one=num_samples == 1 and bool(temperature))


# ---- prompts ----


def free_prompt(recipe: Recipe, text: str, chat: bool):
    """A typed prompt, prepared as training prepares a dataset row: a one-field template takes the text."""
    spec = recipe.dataset
    fields = prompting.template_fields(spec.prompt) if spec.prompt else []
    if len(set(fields)) == 1:
        return prompting.build_prompt(spec, {fields[0]: text}, chat)
    return prompting.build_prompt(spec.model_copy(update={"prompt": None}), {"prompt": text}, chat)


def read_prompt_file(path: Path) -> list[dict]:
    """`.jsonl`: one object per line (a `prompt` or `messages`, or the columns of the recipe's template, plus any
    columns the rewards read); any other file: one prompt per non-empty line."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"-f {path}: cannot read it ({err.strerror or err})") from err
    if path.suffix.lower() != ".jsonl":
        return [{"text": line} for line in text.splitlines() if line.strip()]
    return [row for _, row in jsonl_objects(text, f"-f {path}", 'a JSON object, like {"prompt": "..."}')]


def prepare_rows(recipe: Recipe, items: list[dict], chat: bool) -> list[dict]:
    """Rows with the `prompt` the model sees plus their other columns: `{"text": ...}` items are typed prompts,
    other items are dataset-like rows (built with the recipe's template when they have its columns)."""
    spec = recipe.dataset
    fields = prompting.template_fields(spec.prompt) if spec.prompt else []
    rows = []
    for number, item in enumerate(items, 1):
        if set(item) == {"text"}:
            rows.append({"prompt": free_prompt(recipe, item["text"], chat)})
            continue
        if fields and all(f in item for f in fields):
            prompt = prompting.build_prompt(spec, item, chat)
        elif "prompt" in item or "messages" in item:
            prompt = prompting.build_prompt(spec.model_copy(update={"prompt": None}), item, chat)
        else:
            wanted = ", ".join(["prompt", "messages", *fields])
            raise UserError(f"prompt {number} has none of the keys {wanted}: give one")
        rows.append({**{k: v for k, v in item.items() if k not in ("prompt", "messages")}, "prompt": prompt})
    return rows


def attach_columns(recipe: Recipe, items: list[dict], rows: list[dict], needed: list[str], tokenizer) -> None:
    """Give rows without the columns the rewards read those of the dataset row asking the same (so a typed `3+4=`
    is scored against the recipe's answer); a prompt not in the dataset is an error naming the column.

    A prompt asks the same as a dataset row when their turns other than system turns are the same, so rows that
    carry a system turn of their own match the typed text; a typed prompt (or a line of a .txt file) then takes the
    row's prompt, system turn and all, so that what is generated and scored is what eval generates and scores."""
    missing = [i for i, row in enumerate(rows) if any(c not in row for c in needed)]
    if not missing:
        return
    try:
        train_rows, held_out = data.load_splits(recipe.dataset, recipe.seed)
    except UserError:
        train_rows, held_out = None, None
    known = {}
    for part in (train_rows, held_out):
        if part is not None and len(part):
            prepared = prompting.prepare(part, recipe.dataset, tokenizer)
            for raw, row in zip(part, prepared, strict=True):
                known.setdefault(_asked(prompting.build_prompt(recipe.dataset, raw, True)), row)
    asked = prepare_rows(recipe, [items[i] for i in missing], True)
    for i, conversation in zip(missing, asked, strict=True):
        row = rows[i]
        match = known.get(_asked(conversation["prompt"]))
        if match is None:
            absent = [c for c in needed if c not in row]
            raise UserError(
                f"prompt {shown(row['prompt'])!r} is not in the recipe's dataset, and its rewards read column(s) "
                f"{', '.join(absent)}: give prompts in a .jsonl file with those columns"
            )
        if set(items[i]) == {"text"}:
            row["prompt"] = match["prompt"]
        for column in needed:
            row.setdefault(column, match[column])


def _asked(messages: list[dict]) -> str:
    """What a conversation asks, as a key: its turns without system (or developer) turns."""
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    return json.dumps(turns, sort_keys=True)


def shown(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return prompt[-1]["content"] if prompt else ""


# ---- running ----


@dataclass
class Tried:
    rows: list[dict]
    samples: list[list[Sample]]
    reward_names: list[str]


def run(
    target: Target,
    model,
    tokenizer,
    items: list[dict],
    settings: Sampling,
    *,
    rewards: bool = False,
    batch_size: int = 64,
) -> Tried:
    """Generate for every item (see prepare_rows) and, with `rewards`, score with the recipe's rewards."""
    recipe = target.recipe
    chat = prompting.uses_chat(recipe.dataset, tokenizer)
    rows = prepare_rows(recipe, items, chat)
    bound = bind_rewards(recipe) if rewards else None
    if bound is not None:
        needed = sorted({c for r in bound.training + bound.eval_only for c in r.columns})
        attach_columns(recipe, items, rows, needed, tokenizer)
        columns = {c for row in rows for c in row}
        for row in rows:  # one set of columns for every row, as a dataset batch has
            for column in columns - set(row):
                row[column] = None
    samples = _generate(recipe, model, tokenizer, rows, settings, batch_size)
    if bound is not None:
        score(samples, rows, bound, chat, batch_size, evaluated_state(target.source, recipe))
    return Tried(rows, samples, bound.names if bound is not None else [])


def _template_kwargs(recipe: Recipe) -> dict:
    return chat_template_kwargs(recipe)


def uses_tools(recipe: Recipe) -> bool:
    return bool(recipe.tools or recipe.environment)


def _generate(recipe: Recipe, model, tokenizer, rows: list[dict], settings: Sampling, batch_size: int):
    """One turn per completion, or with the recipe's tools the training loop's rollouts (`tool_loop`)."""
    if not uses_tools(recipe):
        prompt_ids = prompting.tokenize_prompts(
            tokenizer, [r["prompt"] for r in rows], _template_kwargs(recipe)
        )
        return generate(model, tokenizer, prompt_ids, settings, batch_size)
    return tool_loop.rollouts(
        model,
        tokenizer,
        rows,
        tool_calls.toolbox(tool_binding.bind_all(recipe)),
        settings,
        max_iterations=value(recipe, "max_tool_calling_iterations"),
        chat_template_kwargs=_template_kwargs(recipe),
        batch_size=batch_size,
    )


def transcript(sample: Sample) -> list[str]:
    """What a completion shows: its text, or a rollout's turns, each tool call with its arguments and result."""
    if sample.messages is None:
        return [sample.text]
    lines = []
    for message in sample.messages:
        if message.get("role") == "tool":
            lines.append(f"<- {message.get('name')}: {message.get('content')}")
            continue
        if message.get("content"):
            lines.append(str(message["content"]))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            arguments = json.dumps(function.get("arguments"), ensure_ascii=False)
            lines.append(f"-> {function.get('name')}({arguments})")
    return lines


def chat(
    target: Target,
    model,
    tokenizer,
    settings: Sampling,
    read_line: Callable[[], str | None],
    write: Callable[[str], None],
    note: Callable[[str], None],
) -> int:
    """A chat: each line read is a user turn, answered with the history kept when the tokenizer has a chat
    template (else each line is a prompt on its own). `/reset` clears the history; end of input (Ctrl-D) ends.
    Returns the number of turns answered."""
    recipe = target.recipe
    with_history = prompting.uses_chat(recipe.dataset, tokenizer)
    if not with_history:
        note("the tokenizer has no chat template: each line is a prompt of its own, with no history")
    one = dataclasses.replace(settings, num_samples=1)
    history: list[dict] = []
    turns = 0
    while True:
        line = read_line()
        if line is None:
            return turns
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history.clear()
            note("history cleared")
            continue
        if with_history:
            messages = [*history, {"role": "user", "content": text}]
            spec = recipe.dataset.model_copy(update={"prompt": None})
            prompt = prompting.build_prompt(spec, {"messages": messages}, True)
        else:
            prompt = free_prompt(recipe, text, False)
        (sample,) = _generate(recipe, model, tokenizer, [{"prompt": prompt}], one, 1)[0]
        write("\n".join(transcript(sample)))
        turns += 1
        if with_history:
            answer = sample.messages or prompting.as_completion(sample.text, chat=True)
            history += [{"role": "user", "content": text}, *answer]


def load_target(target: Target):
    """The model and its tokenizer; with tools, the tokenizer given the recipe's tool template and TRL's parser."""
    recipe = target.recipe
    agent = tool_binding.bind_all(recipe) if uses_tools(recipe) else None  # a bad tool fails before loading
    models.quiet_progress_bars()
    model, tokenizer = load_source(target.source, recipe)
    problems = tool_calls.prepare_tokenizer(tokenizer, recipe.tool_template) if agent else []
    if problems:
        raise ConfigError(recipe.path.name if recipe.path else "recipe", problems)
    return model, tokenizer
