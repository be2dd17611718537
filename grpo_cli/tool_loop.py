"""Multi-turn rollouts with tools outside training: the loop `eval`, `generate` and `rewards test` share, written to
do what TRL 1.12's `GRPOTrainer._tool_call_loop` does in training, step for step.

One rollout: draw an environment instance from a pool (TRL's: made once, `reset(**row)` before each rollout; a
mapping of environments picks one by the row's `environment` column) and append what `reset` returns to the
prompt's last message; render the prompt with the rollout's tool schemas; generate; parse the assistant turn with
the tokenizer's response parser (TRL's `parse_response`); run each tool call (the guarded tools of
`tool_calls.toolbox`: a fault is an exception, answered `{'error': '...'}` and counted as a failure); append the
results as `tool` messages, with the tokens TRL's `_get_tool_suffix_ids` gives (`compat.trl.tool_suffix_ids`), and
generate again from the concatenated ids (no re-tokenisation). It stops when a turn has no tool call, after
`max_tool_calling_iterations` rounds, or when a tool result would push the completion past
`max_completion_length` (or the sequence to the model's `max_position_embeddings`): that result is dropped, with
no message, as TRL does. The turn after a tool result is cut to what is left of `max_completion_length`.

Decoding is eval's (`generation.generate`: greedy for one sample, the recipe's sampling otherwise, the same stop and
suppressed tokens); rollouts go `batch_size` at a time, each turn one batch of the rollouts still calling tools.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable
from typing import Any

from grpo_cli import tool_binding
from grpo_cli.generation import Sample, Sampling, eos_ids, generate
from grpo_cli.tool_calls import Toolbox


def iterations_cap(value: int | None) -> int:
    """TRL's `max_tool_calling_iterations`: None is no cap."""
    return sys.maxsize if value is None else value


def tool_methods(environment) -> list[Callable]:
    """An environment instance's tools as TRL finds them: its public bound methods but reset and get_reward."""
    return [
        member
        for name, member in inspect.getmembers(environment, predicate=inspect.ismethod)
        if name not in tool_binding.OWN_METHODS and not name.startswith("_")
    ]


def _with_observation(prompt: list[dict], observation) -> list[dict]:
    """The prompt with `reset()`'s observation appended to its last message, as TRL does."""
    if observation is None:
        return prompt
    content = prompt[-1]["content"]
    if isinstance(observation, list) and isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if isinstance(observation, str) and isinstance(content, list):
        observation = [{"type": "text", "text": observation}]
    return [*prompt[:-1], {**prompt[-1], "content": content + observation}]


class _Pool:
    """Environment instances per name, reused across chunks (reset before each rollout), as TRL pools them."""

    def __init__(self, factory):
        self.factories = {None: factory} if callable(factory) else dict(factory or {})
        self.instances: dict[Any, list] = {}

    def draw(self, names: list) -> list:
        cursor: dict[Any, int] = {}
        drawn = []
        for name in names:
            pool = self.instances.setdefault(name, [])
            index = cursor.get(name, 0)
            if index == len(pool):
                pool.append(self.factories[name]())
            cursor[name] = index + 1
            drawn.append(pool[index])
        return drawn


def _parser(tokenizer) -> Callable[[list[int], list[int]], dict]:
    """TRL's decoding of a turn: `parse_response` (tool calls included) when the tokenizer has a response parser,
    else the text as one assistant message."""
    from trl.chat_template_utils import parse_response

    if (
        getattr(tokenizer, "response_template", None) is not None
        or getattr(tokenizer, "response_schema", None) is not None
    ):
        return lambda ids, prefix: parse_response(tokenizer, ids, prefix=prefix)
    return lambda ids, prefix: {
        "role": "assistant",
        "content": tokenizer.decode(ids, skip_special_tokens=True),
    }


def training_chat_template(tokenizer):
    """The template TRL renders tool conversations with: None (the tokenizer's own) when it is prefix-preserving,
    else TRL's training-safe rewrite of it."""
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_prefix_preserving

    return None if is_chat_template_prefix_preserving(tokenizer) else get_training_chat_template(tokenizer)


def _call_tools(tool_calls: list[dict], tools: dict[str, Callable]) -> tuple[list[dict], int, int]:
    """Run one turn's tool calls as TRL does: the tool messages, the calls and the failures (exceptions)."""
    messages, calls, failures = [], 0, 0
    for tool_call in tool_calls:
        calls += 1
        if tool_call["type"] == "function":
            function = tool_call["function"]
            name = function["name"]
            try:
                if name not in tools:
                    raise ValueError(f"Tool {name} not found.")
                result = tools[name](**function["arguments"])
            except Exception as err:
                failures += 1
                result = {"error": str(err)}
        else:
            failures += 1
            name = tool_call.get("name", "unknown")
            result = {"error": f"Unsupported tool call type: {tool_call['type']}"}
        content = result if isinstance(result, list) else str(result)
        messages.append({"role": "tool", "name": name, "content": content})
    return messages, calls, failures


def rollouts(
    model,
    tokenizer,
    rows: list[dict],
    toolbox: Toolbox,
    sampling: Sampling,
    *,
    max_iterations: int | None,
    chat_template_kwargs: dict | None = None,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Sample]]:
    """`sampling.num_samples` multi-turn rollouts of each row's `prompt` (a message list), `[row][sample]`.

    Each Sample's `messages` is the completion as training's rewards get it (assistant turns with `tool_calls`,
    `tool` results, the final answer); `token_ids` are the completion's tokens, tool results included (TRL's
    `completion_ids`), of which `tool_tokens` are not the model's; `prompt` is what the model was asked (with the
    environment's observation); `env_rewards` holds `get_reward()` by environment class name."""
    kwargs = chat_template_kwargs or {}
    cap = iterations_cap(max_iterations)
    pool = _Pool(toolbox.environment_factory)
    multi = isinstance(toolbox.environment_factory, dict)
    template = training_chat_template(tokenizer)
    parse = _parser(tokenizer)
    stops = set(eos_ids(model, tokenizer))
    limit = sampling.max_new_tokens
    max_model_len = model.config.max_position_embeddings
    one = dataclasses.replace(sampling, num_samples=1, sample_one=not sampling.greedy)
    items = [(i, j) for i in range(len(rows)) for j in range(sampling.num_samples)]
    results: list[list[Sample | None]] = [[None] * sampling.num_samples for _ in rows]

    def turn(prompt_ids: list[list[int]], seed: int) -> list[list[int]]:
        drawn = generate(model, tokenizer, prompt_ids, dataclasses.replace(one, seed=seed), batch_size)
        return [group[0].token_ids for group in drawn]

    for number, start in enumerate(range(0, len(items), batch_size)):
        chunk = items[start : start + batch_size]
        chunk_rows = [rows[i] for i, _ in chunk]
        seed = sampling.seed + 1000 * number  # and + turn: each chunk's turns draw with their own seeds
        names = [row.get(tool_binding.ENVIRONMENT_COLUMN) if multi else None for row in chunk_rows]
        environments = pool.draw(names) if pool.factories else [None] * len(chunk)
        prompts, tools, schemas = [], [], []
        for row, environment in zip(chunk_rows, environments, strict=True):
            prompt = row["prompt"]
            methods = []
            if environment is not None:
                reset_row = (
                    {k: v for k, v in row.items() if k != tool_binding.ENVIRONMENT_COLUMN} if multi else row
                )
                prompt = _with_observation(prompt, environment.reset(**reset_row))
                methods = tool_methods(environment)
            available = [*toolbox.tools, *methods]
            prompts.append(prompt)
            schemas.append(available)
            tools.append({tool.__name__: tool for tool in available})
        prompt_ids = [
            list(
                tokenizer.apply_chat_template(
                    conversation=[prompt],
                    tools=schema
                    or None,  # `or None`, as TRL: Llama's template renders tool boilerplate for []
                    chat_template=template,
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=True,
                    **kwargs,
                )["input_ids"][0]
            )
            for prompt, schema in zip(prompts, schemas, strict=True)
        ]
        completion_ids = turn(prompt_ids, seed)
        completions = [[parse(ids, p)] for ids, p in zip(completion_ids, prompt_ids, strict=True)]
        tool_tokens = [0] * len(chunk)
        calls, failures = [0] * len(chunk), [0] * len(chunk)
        active = [k for k, c in enumerate(completions) if c[0].get("tool_calls")]
        iteration = 0
        while active and iteration < cap:
            extended = []
            for k in active:
                before = len(completions[k])
                answers, n_calls, n_failures = _call_tools(completions[k][-1]["tool_calls"], tools[k])
                calls[k] += n_calls
                failures[k] += n_failures
                completions[k] += answers
                suffix = _suffix(tokenizer, answers, template, kwargs)
                ids = prompt_ids[k] + completion_ids[k] + suffix
                if len(ids) - len(prompt_ids[k]) > limit or len(ids) >= max_model_len:
                    del completions[k][before:]  # dropped, as TRL drops it: the rollout ends here
                    continue
                extended.append((k, ids))
            if not extended:
                break
            post = turn([ids for _, ids in extended], seed + iteration + 1)
            active = []
            for (k, ids), new in zip(extended, post, strict=True):
                new = new[: max(0, limit - (len(ids) - len(prompt_ids[k])))]
                tool_tokens[k] += len(ids) - len(prompt_ids[k]) - len(completion_ids[k])
                completion_ids[k] = ids[len(prompt_ids[k]) :] + new
                parsed = parse(new, ids) if new else {}
                if parsed:  # {}: the turn was cut to nothing
                    completions[k].append(parsed)
                if parsed.get("tool_calls"):
                    active.append(k)
            iteration += 1
        for k, (i, j) in enumerate(chunk):
            ids = completion_ids[k]
            env_rewards = {}
            environment = environments[k]
            if environment is not None and hasattr(environment, "get_reward"):
                env_rewards[type(environment).__name__] = environment.get_reward()
            results[i][j] = Sample(
                i,
                j,
                tokenizer.decode(ids, skip_special_tokens=True),
                ids,
                clipped=not ids or ids[-1] not in stops,
                messages=completions[k],
                prompt=prompts[k],
                tool_calls=calls[k],
                tool_failures=failures[k],
                tool_tokens=tool_tokens[k],
                env_rewards=env_rewards,
            )
        if on_batch is not None:
            on_batch(len(chunk))
    return results


def _suffix(tokenizer, tool_messages: list[dict], template, kwargs: dict) -> list[int]:
    from grpo_cli.compat.trl import tool_suffix_ids

    return tool_suffix_ids(tokenizer, tool_messages, template, kwargs)


def tool_metrics(samples: list[list[Sample]]) -> dict[str, float | None]:
    """eval's tool metrics: tool calls per completion, failed calls per call (0 without calls, as TRL's
    `tools/failure_frequency`), and assistant turns per completion."""
    flat = [s for group in samples for s in group]
    if not flat:
        return {"tool_calls_per_completion": None, "tool_failure_rate": None, "turns": None}
    calls = sum(s.tool_calls for s in flat)
    return {
        "tool_calls_per_completion": calls / len(flat),
        "tool_failure_rate": sum(s.tool_failures for s in flat) / calls if calls else 0.0,
        "turns": sum(s.turns for s in flat) / len(flat),
    }
