"""An LLM judge over any OpenAI-compatible chat completions endpoint: what the built-in `judge` reward calls.

- `Rubric`: the prompt template the judge reads, over `{prompt}`, `{completion}` and the row's columns.
- `read_score`: the judge's reply -> a score on [0, 1] (the first number, mapped linearly from `score_range`; a
  yes/no; or either read from a JSON field), or None when the reply says neither.
- `JudgeClient`: the requests, concurrent up to `max_concurrency`, each with a `timeout`, retried with exponential
  backoff on 429 (its Retry-After honoured), 5xx, malformed replies, timeouts and connection errors; replies
  cached by the rendered rubric (so by rubric, prompt, completion and the columns it shows) for the client's life.

HTTP goes through `requests` (already a dependency) in worker threads: `httpx` is not installed with what grpo-cli
depends on. The API key is read from its environment variable at each request and sent only as the
`Authorization` header; nothing here writes it anywhere.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import string
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROLE_FIELDS = ("prompt", "completion")  # the template fields that are not dataset columns
CACHE_SIZE = 65536  # replies kept per client (a run's worth of distinct completions for most recipes)
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is waited for this long
REPLY_LOGGED = 2000  # characters of a reply kept in log_extra

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class JudgeError(Exception):
    """One completion the judge could not score: its request failed after every retry, or (with
    `unparsed: error`) its reply held no score."""


# ---- the rubric ----


class Rubric:
    """A prompt template over `{prompt}`, `{completion}` and row columns (`{{` and `}}` are literal braces)."""

    def __init__(self, template: str):
        if not isinstance(template, str):
            raise ValueError(f"the rubric must be text, got a {type(template).__name__} (quote it in YAML)")
        if not template.strip():
            raise ValueError("the rubric is empty: write the judge's instructions with {completion} in them")
        fields = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as err:  # a lone { or }
            raise ValueError(
                f"the rubric is not a valid template ({err}); write {{{{ and }}}} for braces"
            ) from err
        for _text, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(
                    f"rubric field {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: "
                    "write plain names such as {prompt}, {completion} or {answer} (a column); {{ and }} for braces"
                )
            fields.append(name)
        if "completion" not in fields:
            raise ValueError("the rubric never shows the judge the completion: put {completion} in it")
        self.template = template
        self.columns = [f for f in dict.fromkeys(fields) if f not in ROLE_FIELDS]

    def render(self, prompt, completion, row: dict) -> str:
        values = {name: as_text(row.get(name)) for name in self.columns}
        return self.template.format_map(
            {**values, "prompt": as_text(prompt), "completion": as_text(completion)}
        )


def as_text(value) -> str:
    """A prompt, completion or column value as the judge reads it: text as it is; a chat message list as its
    contents (each after its role when there are several); anything else as JSON where it can be."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        if len(value) == 1:
            return str(value[0]["content"] or "")
        return "\n\n".join(f"{m.get('role', 'user')}: {m['content'] or ''}" for m in value)
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


# ---- reading the verdict ----


def check_reading(score_format: str, score_range, json_field) -> tuple[float, float]:
    """The arguments that say how to read a reply, checked; returns the range as two floats."""
    if score_format not in ("number", "yes_no"):
        raise ValueError(f"score_format must be 'number' or 'yes_no', got {score_format!r}")
    if json_field is not None and (not isinstance(json_field, str) or not json_field):
        raise ValueError(
            f"json_field must be the name of a field of the judge's JSON reply, got {json_field!r}"
        )
    try:
        low, high = (float(v) for v in score_range)
    except (TypeError, ValueError):
        raise ValueError(f"score_range must be two numbers [low, high], got {score_range!r}") from None
    if not low < high:
        raise ValueError(f"score_range must be [low, high] with low < high, got {score_range!r}")
    return low, high


def read_score(
    reply: str, score_format: str = "number", score_range=(0, 10), json_field: str | None = None
) -> tuple[float | None, float | None]:
    """(the value the judge gave, that value as a score on [0, 1]); (None, None) when the reply has none.

    `number`: the first number in the reply (or in its `json_field`), mapped linearly from `score_range` onto
    [0, 1]; a number outside the range is no score. `yes_no`: the first "yes" or "no" (or a JSON true/false).

    >>> from grpo_cli.judge import read_score
    >>> read_score("Score: 7/10. Mostly right."), read_score("8", score_range=[1, 5])
    ((7.0, 0.7), (None, None))
    >>> read_score("Yes, it is correct.", "yes_no"), read_score('{"score": 4}', json_field="score", score_range=[0, 5])
    ((1.0, 1.0), (4.0, 0.8))
    """
    low, high = check_reading(score_format, score_range, json_field)
    value = _json_field(reply, json_field) if json_field is not None else reply
    if score_format == "yes_no":
        if isinstance(value, bool):
            return float(value), float(value)
        found = _YES_NO.search(value) if isinstance(value, str) else None
        if found is None:
            return None, None
        yes = float(found.group(1).lower() == "yes")
        return yes, yes
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        found = _NUMBER.search(value) if isinstance(value, str) else None
        if found is None:
            return None, None
        number = float(found.group())
    if not low <= number <= high:
        return None, None
    return number, (number - low) / (high - low)


def _json_field(reply: str, name: str):
    """The field `name` of the first JSON object in the reply (a ```json fence or prose around it is skipped)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", reply)):
        try:
            obj, _end = decoder.raw_decode(reply, start)
        except ValueError:
            continue
        if isinstance(obj, dict) and name in obj:
            return obj[name]
    return None


# ---- the requests ----


@dataclass
class Reply:
    """What one request came to: the judge's text, or why there is none."""

    text: str | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class Counts:
    """What a client did: HTTP requests sent, retries among them, replies served from the cache, failures."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
        }


class _Retry(Exception):
    def __init__(self, problem: str, wait: float | None = None):
        super().__init__(problem)
        self.wait = wait  # what the server asked for (Retry-After), else None


class JudgeClient:
    """Chat completion requests to one judge model, with the limits, retries and cache the module docstring says."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = 256,
        timeout: float = 60.0,
        max_concurrency: int = 8,
        retries: int = 3,
        backoff: float = 1.0,
    ):
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ValueError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if not isinstance(model, str) or not model:
            raise ValueError("model must name the judge model the server serves (its /v1/models lists them)")
        if api_key_env is not None and not (
            isinstance(api_key_env, str) and _ENV_NAME.fullmatch(api_key_env)
        ):
            # Never echo the value: someone may have pasted the key itself here.
            raise ValueError(
                "api_key_env must be the NAME of the environment variable that holds the key (e.g. OPENAI_API_KEY), "
                "not the key itself"
            )
        for name, value, least in (
            ("timeout", timeout, 0),
            ("backoff", backoff, 0),
            ("temperature", temperature, 0),
        ):
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or value < least
                or value != value
            ):
                raise ValueError(f"{name} must be a number >= {least}, got {value!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        for name, value, least in (("max_concurrency", max_concurrency, 1), ("retries", retries, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise ValueError(f"max_tokens must be a whole number >= 1 (or null), got {max_tokens!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.temperature, self.max_tokens = float(temperature), max_tokens
        self.timeout, self.max_concurrency, self.retries, self.backoff = (
            float(timeout),
            max_concurrency,
            retries,
            backoff,
        )
        self.counts = Counts()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._session = None
        self._executor: ThreadPoolExecutor | None = None

    async def ask_all(self, texts: list[str]) -> list[Reply]:
        """The judge's reply to each text (a user message): each distinct text asked once, cached ones not at all."""
        replies: dict[str, Reply] = {}
        hits = 0
        for text in texts:
            if text in self._cache:
                self._cache.move_to_end(text)
                replies[text] = Reply(self._cache[text], cached=True)
            hits += text in replies  # asked before, or earlier in this batch
            replies.setdefault(text, None)
        self.counts.add(cache_hits=hits)
        todo = [t for t, r in replies.items() if r is None]
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(text: str) -> None:
            async with limit:
                replies[text] = await self._ask(text)

        await asyncio.gather(*(one(t) for t in todo))
        for text in todo:
            if replies[text].text is not None:
                self._cache[text] = replies[text].text
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return [replies[t] for t in texts]

    async def _ask(self, text: str) -> Reply:
        loop = asyncio.get_running_loop()
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.counts.add(retries=1)
            self.counts.add(requests=1)
            try:
                call = loop.run_in_executor(self._pool(), self._post, text)
                return Reply(await asyncio.wait_for(call, self.timeout))
            except _Retry as err:
                problem, wait = str(err), err.wait
            except asyncio.TimeoutError:
                problem, wait = f"no reply within the timeout of {self.timeout:g} s", None
            except JudgeError as err:  # not worth retrying (a 4xx other than 429)
                self.counts.add(failures=1)
                return Reply(error=str(err))
            if attempt < self.retries:
                await asyncio.sleep(wait if wait is not None else self.backoff * 2**attempt)
        self.counts.add(failures=1)
        tries = f" after {self.retries} retr{'y' if self.retries == 1 else 'ies'}" if self.retries else ""
        return Reply(error=f"{problem}{tries}")

    def _pool(self) -> ThreadPoolExecutor:
        # Threads, not the loop's default executor: a request abandoned at its timeout keeps its thread until the
        # socket times out too, so twice the concurrency leaves room for those.
        if self._executor is None:
            import requests

            self._session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.max_concurrency)
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
            self._executor = ThreadPoolExecutor(2 * self.max_concurrency, thread_name_prefix="judge")
        return self._executor

    def _post(self, text: str) -> str:
        """One request, in a worker thread: the reply's text, or _Retry / JudgeError saying what went wrong."""
        import requests

        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            response = self._session.post(self.url, json=body, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise _Retry(f"no reply within the timeout of {self.timeout:g} s") from None
        except requests.RequestException as err:  # refused, dropped, reset, a reply cut short
            raise _Retry(f"connection to {self.url} failed ({type(err).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status} from {self.url}", _retry_after(response.headers.get("Retry-After")))
        if status != 200:
            raise JudgeError(f"HTTP {status} from {self.url}: {_short(response.text)}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry(f"a reply that is not a chat completion: {_short(response.text)}") from None
        if not isinstance(content, str):
            raise _Retry(f"a reply whose message content is {type(content).__name__}, not text")
        return content

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._session.close()
            self._executor = self._session = None


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), at most MAX_RETRY_AFTER."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
