"""A fixed, seeded corpus of broken recipes for `grpo-cli validate` (issue 11), and a way to run one case.

Every case is a set of files written into an empty directory (the recipe is `recipe.yaml`, beside it any data
files or parents it names) plus command-line overrides. The corpus mutates the shipped recipes and a local-file
variant of the `addition` recipe: every leaf given wrong types and odd values, every section deleted, replaced or given
an unknown key, whole-file junk, bad overrides, `extends:` chains and bad data files.

`python -m tests.fuzz_corpus` prints the counts (exit 0 / exit 2 / other) over the corpus.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEED = 11
TIMEOUT_S = 5

ROWS = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@dataclass
class Case:
    id: str
    files: dict[str, bytes]
    overrides: list[str] = field(default_factory=list)


def _dump(data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def base_recipes() -> dict[str, dict]:
    from grpo_cli._paths import RECIPES_DIR

    # Every shipped recipe, a pipeline's stage recipes (recipes/pipeline/*.yaml, as pipeline-sft, ...) included.
    bases = {
        "-".join(p.relative_to(RECIPES_DIR).with_suffix("").parts): yaml.safe_load(p.read_text())
        for p in sorted(RECIPES_DIR.rglob("*.yaml"))
    }
    local = json.loads(json.dumps(bases["addition"]))
    local["dataset"] = {"source": "data.jsonl", "prompt": "{question}", "eval_size": 4}
    local["trainer"]["per_device_train_batch_size"] = 8
    bases["local"] = local
    return bases


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path


def _set(data, path, value):
    data = json.loads(json.dumps(data))
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def _delete(data, path):
    data = json.loads(json.dumps(data))
    node = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return data


ODD_VALUES = [
    None,
    -1,
    0,
    10_000_000,
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    "x",
    "",
    "a\x00b",
    [],
    {},
    True,
    "1e-5",
    -1e-5,
    [1, "x"],
    {"k": 1},
    "{}",
    "{0}",
    "{question!r}",
    "/no/such/dir",
    "model:",
    2**70,
]


def _with_data(files: dict[str, bytes]) -> dict[str, bytes]:
    return {"data.jsonl": JSONL, **files}


def corpus() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    bases = base_recipes()

    # Every leaf of every base, given odd values (a seeded sample of them), and deleted.
    for name, base in bases.items():
        for path in _leaves(base):
            dotted = ".".join(map(str, path))
            for value in rng.sample(ODD_VALUES, 6):
                cases.append(
                    Case(
                        f"{name}:{dotted}={value!r}",
                        _with_data({"recipe.yaml": _dump(_set(base, path, value))}),
                    )
                )
            cases.append(
                Case(f"{name}:del {dotted}", _with_data({"recipe.yaml": _dump(_delete(base, path))}))
            )

    # Every section (and nested section): deleted, replaced by a scalar, a list, null, or given an unknown key.
    for name, base in bases.items():
        sections = [(k,) for k, v in base.items() if isinstance(v, dict | list)]
        sections += [
            (k, k2)
            for k, v in base.items()
            if isinstance(v, dict)
            for k2, v2 in v.items()
            if isinstance(v2, dict)
        ]
        sections += [("distributed",), ("eval",), ("lora",)]
        for path in sections:
            dotted = ".".join(path)
            for value in (5, "text", [1, 2], None, {"bogus": 1}, [[[]]]):
                cases.append(
                    Case(
                        f"{name}:section {dotted}={value!r}",
                        _with_data({"recipe.yaml": _dump(_set(base, path, value))}),
                    )
                )
            node = base
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                cases.append(
                    Case(
                        f"{name}:unknown key in {dotted}",
                        _with_data({"recipe.yaml": _dump(_set(base, (*path, "zzz_unknown"), 1))}),
                    )
                )

    qs = bases["addition"]
    text = _dump(qs)
    # Whole-file junk.
    junk = {
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "latin1": "algorithm: grpo\n# caf\xe9\nseed: 1\n".encode("latin-1"),
        "utf16": text.decode().encode("utf-16"),
        "nul bytes": b"\x00" * 64,
        "list": b"- 1\n- 2\n",
        "scalar": b"42\n",
        "string": b"hello\n",
        "deep nesting": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "deep mapping": b"".join(b"  " * i + b"k:\n" for i in range(3000)) + b"  " * 3000 + b"v\n",
        "invalid yaml": b"model: [unclosed\n",
        "tab indent": b"model:\n\tfrom_config: {}\n",
        "duplicate key": text + b"seed: 3\n",
        "duplicate nested": text.replace(b"  learning_rate:", b"  learning_rate: 0.1\n  learning_rate:"),
        "yaml tags": b"seed: !!python/object:os.system 1\n",
        "anchors bomb": b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
        "bom": b"\xef\xbb\xbf" + text,
        "crlf": text.replace(b"\n", b"\r\n"),
        "int keys": text + b"1: 2\n",
        "null key": text + b"~: 2\n",
        "merge keys": b"base: &b {seed: 1}\n<<: *b\n",
        "huge int": text.replace(b"seed: 0", b"seed: " + b"9" * 5000),
        "multi documents": text + b"---\nseed: 1\n",
    }
    for what, content in junk.items():
        cases.append(Case(f"junk:{what}", {"recipe.yaml": content}))

    # Overrides.
    overrides = [
        "trainer.max_steps=-1",
        "trainer.learning_rate=nan",
        "trainer.learning_rate=-1",
        "trainer.learning_rate=1e-5",
        "trainer.learning_rate=[1",
        "trainer=5",
        "trainer.x.y=1",
        "rewards.0.name=x",
        "rewards=5",
        "rewards=[{name: 5}]",
        "eval.rewards=5",
        "seed=-1",
        "seed=99999999999999",
        "model=null",
        "dataset.generate.options.max_operand=10000000",
        "dataset.generate.options.nope=1",
        "dataset.generate.size=1",
        "trainer.temperature=0",
        "trainer.per_device_train_batch_size=0",
        "trainer.generation_batch_size=3",
        "trainer.num_generations=1",
        "=",
        "a=b=c",
        ".=1",
        "\x00=1",
        "seed=\x00",
        "trainer.max_completion_length=0",
        "model.from_config.num_attention_heads=3",
        "model.from_config.vocabulary=",
        "distributed.main_process_port=-1",
        "algorithm=ppo",
        "algorithm=sft",
        "dataset.eval_size=100",
        "dataset.prompt={question.real}",
    ]
    for item in overrides:
        cases.append(Case(f"override:{item!r}", {"recipe.yaml": text}, [item]))

    # extends chains.
    extends = {
        "binary parent": {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": bytes(range(256))},
        "list parent": {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"- 1\n"},
        "missing parent": {"recipe.yaml": b"extends: gone.yaml\n"},
        "int extends": {"recipe.yaml": b"extends: 5\n"},
        "list extends": {"recipe.yaml": b"extends: [a, b]\n"},
        "nul extends": {"recipe.yaml": b'extends: "a\\0b"\n'},
        "dir extends": {"recipe.yaml": b"extends: .\n"},
        "loop": {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"extends: recipe.yaml\n"},
        "shipped": {"recipe.yaml": b"extends: addition\nseed: 3\n"},
        "shipped + eval reward": {"recipe.yaml": b"extends: addition\neval: {rewards: [{name: accuracy}]}\n"},
        "chain of 3": {
            "recipe.yaml": b"extends: a.yaml\nseed: 1\n",
            "a.yaml": b"extends: b.yaml\ntrainer: {max_steps: 3}\n",
            "b.yaml": text,
        },
        "parent latin1": {
            "recipe.yaml": b"extends: p.yaml\n",
            "p.yaml": "seed: 1 # \xe9\n".encode("latin-1"),
        },
        "parent duplicate": {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": text + b"seed: 5\n"},
        "parent deep": {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"a: " + b"[" * 5000 + b"]" * 5000},
    }
    for what, files in extends.items():
        cases.append(Case(f"extends:{what}", files))

    # Bad data files for the local variant.
    local = bases["local"]

    def with_source(source: str, content: bytes) -> dict[str, bytes]:
        return {"recipe.yaml": _dump(_set(local, ("dataset", "source"), source)), source: content}

    data_files = {
        "binary jsonl": ("data.jsonl", bytes(range(256)) * 8),
        "latin1 jsonl": ("data.jsonl", '{"question": "caf\xe9", "answer": "1"}\n'.encode("latin-1")),
        "numbers json": ("data.json", b"[1, 2, 3]"),
        "scalar json": ("data.json", b"42"),
        "string json": ("data.json", b'"x"'),
        "empty json": ("data.json", b"[]"),
        "empty object json": ("data.json", b"{}"),
        "garbage parquet": ("data.parquet", b"not a parquet file"),
        "empty jsonl": ("data.jsonl", b""),
        "blank jsonl": ("data.jsonl", b"\n\n"),
        "header-only csv": ("data.csv", b"question,answer\n"),
        "empty csv": ("data.csv", b""),
        "malformed line jsonl": ("data.jsonl", JSONL + b"{not json\n" + JSONL),
        "list line jsonl": ("data.jsonl", JSONL + b"[1, 2]\n"),
        "mixed columns jsonl": ("data.jsonl", JSONL + b'{"other": 1}\n'),
        "one row jsonl": ("data.jsonl", JSONL.splitlines(keepends=True)[0]),
        "utf16 csv": ("data.csv", "question,answer\n1+1=,2\n".encode("utf-16")),
        "directory": ("data.jsonl/x", b""),
    }
    for what, (source, content) in data_files.items():
        if what == "directory":
            files = {"recipe.yaml": _dump(local), source: content}
        else:
            files = with_source(source.split("/")[0], content)
        cases.append(Case(f"data:{what}", files))
    cases.append(
        Case(
            "data:eval_split file",
            {
                "recipe.yaml": _dump(
                    _set(_delete(local, ("dataset", "eval_size")), ("dataset", "eval_split"), "eval.jsonl")
                ),
                "data.jsonl": JSONL,
                "eval.jsonl": JSONL,
            },
        )
    )
    return cases


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@dataclass
class Outcome:
    code: int | str  # the exit code, or "hang" / "crash"
    stderr: str
    seconds: float


def run_case(case: Case, directory: Path, timeout: float = TIMEOUT_S) -> Outcome:
    """Write the case into `directory` and run `grpo-cli validate recipe.yaml` in-process there."""
    from typer.testing import CliRunner

    from grpo_cli.cli import app

    for name, content in case.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    previous_dir = os.getcwd()
    previous = signal.signal(signal.SIGALRM, _alarm)
    os.chdir(directory)
    started = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        result = CliRunner().invoke(app, ["validate", "recipe.yaml", *case.overrides])
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Hang:
        return Outcome("hang", "", time.perf_counter() - started)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(previous_dir)
    seconds = time.perf_counter() - started
    if isinstance(result.exception, _Hang):
        return Outcome("hang", "", seconds)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome("crash", f"{type(result.exception).__name__}: {result.exception}"[:300], seconds)
    return Outcome(result.exit_code, result.stderr, seconds)


def classify(outcome: Outcome) -> str:
    """ "0", "2" or "other" (a crash, a hang, another exit code, or an exit 2 without a clean message)."""
    if outcome.code == 0:
        return "0"
    if outcome.code == 2 and outcome.stderr.startswith("error: ") and "Traceback" not in outcome.stderr:
        return "2"
    return "other"


def main() -> None:
    import sys
    import tempfile

    with contextlib.suppress(Exception):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway case fails instead of swapping
    counts = {"0": 0, "2": 0, "other": 0}
    verbose = "-v" in sys.argv
    for i, case in enumerate(corpus()):
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_case(case, Path(tmp))
        kind = classify(outcome)
        counts[kind] += 1
        if kind == "other" or verbose:
            print(
                f"{kind:5} {outcome.code!s:5} {outcome.seconds:5.1f}s {case.id!r}: {outcome.stderr.strip()[:200]!r}"
            )
        del i
    print(f"{sum(counts.values())} cases: {counts}")


if __name__ == "__main__":
    main()
