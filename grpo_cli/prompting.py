"""Prompts from dataset rows: templates, chat or text, the columns each trainer reads, prompt token ids."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from grpo_cli.errors import UserError, describe
from grpo_cli.output import warn_once

if TYPE_CHECKING:
    from datasets import Dataset

    from grpo_cli.recipe import DatasetSection


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


def as_completion(answer: str | list[dict], chat: bool) -> str | list[dict]:
    """A completion as TRL hands it to rewards and trainers: a text is one assistant message (in a list) for a chat
    prompt, else itself; a message list stays as it is."""
    return [{"role": "assistant", "content": answer}] if chat and isinstance(answer, str) else answer


def split_transcript(messages) -> tuple[list[dict], list[dict]] | None:
    """A saved conversation (`messages`: prompt turns, then the assistant's turns, tool calls and tool results, as
    eval_samples.jsonl's prompt + completion) -> (prompt, completion), split before the first assistant turn; None
    when it is not a list of messages with an assistant turn."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        return None
    first = next((n for n, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None:
        return None
    return messages[:first], messages[first:]


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
    return as_completion(text, chat)


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
            conversation = {"prompt": prompt, "completion": [messages[-1]]}
            if row.get("tools"):  # tool schemas (TRL's `tools` column): the chat template shows them
                conversation["tools"] = row["tools"]
            rows.append(conversation)
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
        return list(as_completion(answer, chat))
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
