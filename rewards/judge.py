"""An LLM judge: another model, served by any OpenAI-compatible endpoint, scores each completion by a rubric."""

from __future__ import annotations

import os
from pathlib import Path

from grpo_cli import output
from grpo_cli.errors import UserError
from grpo_cli.judge import REPLY_LOGGED, JudgeClient, JudgeError, Rubric, check_reading, read_score

__all__ = ["judge_reward"]

UNPARSED = ("none", "zero", "error")


def judge_reward(
    base_url: str,
    model: str,
    rubric: str | None = None,
    rubric_file: str | None = None,
    api_key_env: str | None = None,
    score_range: list[float] = (0, 10),
    score_format: str = "number",
    json_field: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = 256,
    timeout: float = 60.0,
    max_concurrency: int = 8,
    retries: int = 3,
    backoff: float = 1.0,
    unparsed: str = "none",
):
    """Ask a judge model at `base_url` (an OpenAI-compatible /v1) to score each completion by a rubric.

    `rubric` (or `rubric_file`) is the judge's prompt, a template over {prompt}, {completion} and row columns.
    The score is the first number of the reply (or of its JSON field `json_field`), mapped linearly from
    `score_range` onto [0, 1]; with `score_format: yes_no`, yes is 1 and no is 0. A reply without a score gives
    None (`unparsed: zero` gives 0, `unparsed: error` hands it to the entry's on_error), as does a request that
    fails after `retries` (those always go to on_error). The key is read from the environment variable
    `api_key_env` at each request and is never written anywhere. See docs/rewards.md.

    >>> from grpo_cli.builtin_rewards.judge import judge_reward
    >>> judge = judge_reward("http://127.0.0.1:8000/v1", "judge", rubric="Q: {prompt} A: {completion} Reference: {answer}")
    >>> judge.required_columns  # the dataset columns the rubric reads, which validate checks
    ['answer']
    """
    # Problems are UserErrors that do not echo the args, where binding would: a key pasted as api_key_env.
    try:
        client = JudgeClient(
            base_url,
            model,
            api_key_env,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            backoff=backoff,
        )
        if (rubric is None) == (rubric_file is None):
            raise ValueError(
                "give the judge's prompt as exactly one of `rubric` (inline) or `rubric_file` (a path)"
            )
        if rubric_file is not None:
            rubric = _read_rubric(rubric_file)
        if unparsed not in UNPARSED:
            raise ValueError(f"unparsed must be one of {', '.join(UNPARSED)}, got {unparsed!r}")
        check_reading(score_format, score_range, json_field)
        template = Rubric(rubric)
    except ValueError as err:
        raise UserError(f"judge: {err}") from None
    if api_key_env is not None and not os.environ.get(api_key_env):
        output.warn_once(
            f"judge: the environment variable {api_key_env} (api_key_env) is not set: requests to {base_url} go "
            "without an API key, which only a local server accepts"
        )
    return Judge(client, template, score_format, list(score_range), json_field, unparsed)


class Judge:
    """The reward `judge_reward` returns: async, so that its requests for a batch run concurrently."""

    def __init__(self, client: JudgeClient, rubric: Rubric, score_format, score_range, json_field, unparsed):
        self.client, self.rubric = client, rubric
        self.reading = {"score_format": score_format, "score_range": score_range, "json_field": json_field}
        self.unparsed = unparsed
        self.required_columns = list(rubric.columns)  # what validate checks against the dataset

    async def __call__(self, prompts, completions, log_extra=None, log_metric=None, **columns):
        rows = [
            {c: columns[c][i] for c in self.rubric.columns if c in columns} for i in range(len(completions))
        ]
        missing = [c for c in self.rubric.columns if c not in columns]
        if missing:
            raise UserError(f"judge: the rubric reads column {missing[0]!r}, which this batch does not have")
        texts = [self.rubric.render(p, c, row) for p, c, row in zip(prompts, completions, rows, strict=True)]
        before = self.client.counts.as_dict()
        replies = await self.client.ask_all(texts)
        scores, values, unparsed = [], [], 0
        for reply in replies:
            if reply.text is None:
                scores.append(JudgeError(reply.error))  # the entry's on_error decides
                values.append(None)
                continue
            value, score = read_score(reply.text, **self.reading)
            values.append(value)
            if score is None:
                unparsed += 1
                score = {"none": None, "zero": 0.0}.get(
                    self.unparsed, JudgeError(f"no score in the reply {reply.text[:200]!r}")
                )
            scores.append(score)
        if log_extra is not None and completions:
            # grpo-cli's convention (docs/rewards.md): the value read as the verdict, the raw reply as details.
            log_extra("verdict", ["no score" if v is None else f"{v:g}" for v in values])
            log_extra("details", [_logged(r) for r in replies])
        if log_metric is not None and completions:
            after = self.client.counts.as_dict()
            for name in ("requests", "retries", "cache_hits", "failures"):
                log_metric(f"judge/{name}", float(after[name] - before[name]))
            log_metric("judge/unparsed", float(unparsed))
        return scores


def _read_rubric(path: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read rubric_file {path}: {getattr(err, 'strerror', None) or err}") from None


def _logged(reply) -> str:
    if reply.text is None:
        return f"(no reply: {reply.error})"
    return reply.text if len(reply.text) <= REPLY_LOGGED else reply.text[:REPLY_LOGGED] + "..."
