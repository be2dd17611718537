"""A fixed, seeded corpus of broken recipes for `grpo-cli validate` (issue 11), and a way to run one case.

Every case is a set of files written into an empty directory (the recipe is `recipe.yaml`, beside it any data
files or parents it names) plus command-line overrides. The corpus mutates the shipped recipes and a local-file
variant of the `addition` recipe: every leaf given wrong types and odd values, every section deleted, replaced or given
an unknown key, whole-file junk, bad overrides, `extends:` chains, bad data files, and the classes of issue 23's
items 1-6 (`issue23`, from tests/fuzz_issue23.py). Where a case's construction
says how validate must answer (the recipe as shipped, an unknown key, a section of the wrong type, each hand-written
case), the case carries it: the exit code and a fragment of what stderr must say.

Building the corpus is cheap: recipes are kept as data and dumped to YAML only when a case is written.

`python -m tests.fuzz_corpus` prints the counts (exit 0 / exit 2 / other) over the corpus.
"""

from __future__ import annotations

import contextlib
import functools
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
TIMEOUT_S = 5  # validate answers every case within this much CPU time (the slow suite checks it)
HANG_S = 60  # a case still running after this long (wall clock) is stuck: reported as "hang", not waited for
FAST_STRIDE = 15  # the fast suite validates every 15th case of each kind

ROWS = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(4) for b in range(4)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@dataclass
class Case:
    id: str
    files: dict[str, bytes | dict]  # file name -> its bytes, or a recipe (dumped to YAML when written)
    overrides: list[str] = field(default_factory=list)
    exit: int | None = None  # validate's exit code, where the case's construction fixes it
    says: str | None = None  # a fragment of stderr, where the construction fixes what validate must name

    @property
    def kind(self) -> str:
        """The shipped recipe it mutates (or `local`), or junk, override, extends, data."""
        return self.id.split(":")[0]

    def content(self, name: str) -> bytes:
        given = self.files[name]
        return given if isinstance(given, bytes) else _dump(given)

    def write(self, directory: Path) -> None:
        for name in self.files:
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.content(name))


def _dump(data) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def base_recipes() -> dict[str, dict]:
    """Every shipped recipe by name (a pipeline's stages as pipeline-sft, ...), and `local`: addition on a file."""
    return json.loads(json.dumps(_base_recipes()))  # a copy: callers change theirs


@functools.cache
def _base_recipes() -> dict[str, dict]:
    from grpo_cli._paths import RECIPES_DIR

    # Every shipped recipe, a pipeline's stage recipes (recipes/pipeline/*.yaml, as pipeline-sft, ...) included.
    bases = {
        "-".join(p.relative_to(RECIPES_DIR).with_suffix("").parts): _shipped_data_absolute(p)
        for p in sorted(RECIPES_DIR.rglob("*.yaml"))
    }
    local = json.loads(json.dumps(bases["addition"]))
    local["dataset"] = {"source": "data.jsonl", "prompt": "{question}", "eval_size": 4}
    local["trainer"]["per_device_train_batch_size"] = 8
    bases["local"] = local
    return bases


def _shipped_data_absolute(path) -> dict:
    """A shipped recipe, its dataset file shipped beside it (code-grpo's tasks) named by absolute path: the
    corpus validates each recipe alone in a directory of its own."""
    recipe = yaml.safe_load(path.read_text())
    source = (recipe.get("dataset") or {}).get("source")
    if isinstance(source, str) and (path.parent / source).is_file():
        recipe["dataset"]["source"] = str(path.parent / source)
    return recipe


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


@functools.cache
def corpus() -> tuple[Case, ...]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    bases = base_recipes()

    # Every base as it is, alone in a directory: validate accepts it, or names the stage or run it needs.
    for name, base in bases.items():
        if "stages" in base:
            expected = {"exit": 2, "says": f"stage {base['stages'][0]!r} not found"}
        elif base.get("model", {}).get("run"):
            expected = {"exit": 2, "says": f"model.run: {base['model']['run']} does not exist"}
        else:
            expected = {"exit": 0}
        cases.append(Case(f"{name}:as shipped", _with_data({"recipe.yaml": base}), **expected))

    # Every leaf of every base, given odd values (a seeded sample of them), and deleted.
    for name, base in bases.items():
        for path in _leaves(base):
            dotted = ".".join(map(str, path))
            for value in rng.sample(ODD_VALUES, 6):
                cases.append(
                    Case(f"{name}:{dotted}={value!r}", _with_data({"recipe.yaml": _set(base, path, value)}))
                )
            cases.append(Case(f"{name}:del {dotted}", _with_data({"recipe.yaml": _delete(base, path)})))

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
        sections += [(k,) for k in ("distributed", "eval", "lora") if (k,) not in sections]
        for path in sections:
            dotted = ".".join(path)
            for value in (5, "text", [1, 2], None, {"bogus": 1}, [[[]]]):
                # Any value but null (an optional section's default) is of the wrong type, or an unknown key.
                refused = {"exit": 2, "says": dotted} if value is not None else {}
                cases.append(
                    Case(
                        f"{name}:section {dotted}={value!r}",
                        _with_data({"recipe.yaml": _set(base, path, value)}),
                        **refused,
                    )
                )
            node = base
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                cases.append(
                    Case(
                        f"{name}:unknown key in {dotted}",
                        _with_data({"recipe.yaml": _set(base, (*path, "zzz_unknown"), 1)}),
                        exit=2,
                        says="zzz_unknown",
                    )
                )

    qs = bases["addition"]
    text = _dump(qs)
    # Whole-file junk: name -> (the file, what validate's refusal says; None: it is accepted).
    utf8 = "not UTF-8 text"
    junk = {
        "empty": (b"", "model: required key is missing"),
        "binary": (bytes(range(256)) * 4, utf8),
        "latin1": ("algorithm: grpo\n# caf\xe9\nseed: 1\n".encode("latin-1"), utf8),
        "utf16": (text.decode().encode("utf-16"), utf8),
        "nul bytes": (b"\x00" * 64, "invalid YAML"),
        "list": (b"- 1\n- 2\n", "must be a mapping"),
        "scalar": (b"42\n", "must be a mapping"),
        "string": (b"hello\n", "must be a mapping"),
        "deep nesting": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        "deep mapping": (b"".join(b"  " * i + b"k:\n" for i in range(500)) + b"  " * 500 + b"v\n", "nested"),
        "deeper than a recipe may be": (
            b"".join(b"  " * i + b"k:\n" for i in range(3000)) + b"  " * 3000 + b"v\n",
            "over 1 MiB",
        ),
        "invalid yaml": (b"model: [unclosed\n", "invalid YAML"),
        "tab indent": (b"model:\n\tfrom_config: {}\n", "invalid YAML"),
        "duplicate key": (text + b"seed: 3\n", "duplicate key 'seed'"),
        "duplicate nested": (
            text.replace(b"  learning_rate:", b"  learning_rate: 0.1\n  learning_rate:"),
            "duplicate key 'learning_rate'",
        ),
        "yaml tags": (b"seed: !!python/object:os.system 1\n", "invalid YAML"),
        "anchors bomb": (
            b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
            "a: unknown key",
        ),
        "bom": (b"\xef\xbb\xbf" + text, None),
        "crlf": (text.replace(b"\n", b"\r\n"), None),
        "int keys": (text + b"1: 2\n", "Keys should be strings"),
        "null key": (text + b"~: 2\n", "Keys should be strings"),
        "merge keys": (b"base: &b {seed: 1}\n<<: *b\n", "base: unknown key"),
        "huge int": (text.replace(b"seed: 0", b"seed: " + b"9" * 5000), "invalid YAML"),
        "multi documents": (text + b"---\nseed: 1\n", "another document"),
    }
    for what, (content, says) in junk.items():
        cases.append(Case(f"junk:{what}", {"recipe.yaml": content}, **_expected(says)))

    # Overrides on the addition recipe: override -> what the refusal says (None: accepted).
    bad_override = "write KEY=VALUE with a dotted key"
    no_rows = "leaves no training rows"
    overrides = {
        "trainer.max_steps=-1": None,  # -1: train for num_train_epochs
        "trainer.learning_rate=nan": "trainer.learning_rate: must be a finite number",
        "trainer.learning_rate=-1": "trainer.learning_rate: must be at least 0",
        "trainer.learning_rate=1e-5": None,
        "trainer.learning_rate=[1": "trainer.learning_rate: expected float",
        "trainer=5": "trainer: Input should be a valid dictionary",
        "trainer.x.y=1": "trainer.x: not a field of TRL's GRPOConfig",
        "rewards.0.name=x": "list items cannot be set by index",
        "rewards=5": "rewards: Input should be a valid list",
        "rewards=[{name: 5}]": "rewards[0].name: Input should be a valid string",
        "eval.rewards=5": "eval.rewards: Input should be a valid list",
        "seed=-1": "seed: Input should be greater than or equal to 0",
        "seed=99999999999999": "seed: Input should be less than or equal to 4294967295",
        "model=null": "model: Input should be a valid dictionary",
        "dataset.generate.options.max_operand=10000000": None,
        "dataset.generate.options.nope=1": "dataset.generate.options.nope: not an option of the addition task",
        "dataset.generate.size=1": no_rows,
        "trainer.temperature=0": "trainer.temperature: must be above 0",
        "trainer.per_device_train_batch_size=0": "trainer.per_device_train_batch_size: must be at least 1",
        "trainer.generation_batch_size=3": "trainer.generation_batch_size: 3 is not a multiple",
        "trainer.num_generations=1": "trainer.num_generations: GRPO needs at least 2 completions per prompt",
        "=": bad_override,
        "a=b=c": "a: unknown key",
        ".=1": bad_override,
        "\x00=1": bad_override,
        "seed=\x00": "seed: Input should be a valid integer",
        "trainer.max_completion_length=0": "trainer.max_completion_length: must be at least 1",
        "model.from_config.num_attention_heads=3": "num_attention_heads (3) must divide hidden_size",
        "model.from_config.vocabulary=": "model.from_config.vocabulary: Input should be a valid string",
        "distributed.main_process_port=-1": "distributed.main_process_port: Input should be greater than",
        "algorithm=ppo": "not a field of TRL's PPOConfig",
        "algorithm=sft": "not a field of TRL's SFTConfig",
        "dataset.eval_size=100": no_rows,
        "dataset.prompt={question.real}": "dataset.prompt: Input should be a valid string",
    }
    for item, says in overrides.items():
        cases.append(Case(f"override:{item!r}", {"recipe.yaml": text}, [item], **_expected(says)))

    # extends chains: name -> (files, what the refusal says; None: accepted).
    must_name = "extends must be a recipe path or shipped recipe name"
    extends = {
        "binary parent": ({"recipe.yaml": b"extends: p.yaml\n", "p.yaml": bytes(range(256))}, utf8),
        "list parent": ({"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"- 1\n"}, "must be a mapping"),
        "missing parent": ({"recipe.yaml": b"extends: gone.yaml\n"}, "gone.yaml does not exist"),
        "int extends": ({"recipe.yaml": b"extends: 5\n"}, must_name),
        "list extends": ({"recipe.yaml": b"extends: [a, b]\n"}, must_name),
        "nul extends": ({"recipe.yaml": b'extends: "a\\0b"\n'}, must_name),
        "dir extends": ({"recipe.yaml": b"extends: .\n"}, "does not exist (or is not a file)"),
        "loop": (
            {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"extends: recipe.yaml\n"},
            "recipe extends itself in a loop",
        ),
        "shipped": ({"recipe.yaml": b"extends: addition\nseed: 3\n"}, None),
        "shipped + eval reward": (
            {"recipe.yaml": b"extends: addition\neval: {rewards: [{name: accuracy}]}\n"},
            "eval.rewards[0] (accuracy) is already a training reward",
        ),
        "chain of 3": (
            {
                "recipe.yaml": b"extends: a.yaml\nseed: 1\n",
                "a.yaml": b"extends: b.yaml\ntrainer: {max_steps: 3}\n",
                "b.yaml": text,
            },
            None,
        ),
        "parent latin1": (
            {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": "seed: 1 # \xe9\n".encode("latin-1")},
            utf8,
        ),
        "parent duplicate": (
            {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": text + b"seed: 5\n"},
            "duplicate key 'seed'",
        ),
        "parent deep": (
            {"recipe.yaml": b"extends: p.yaml\n", "p.yaml": b"a: " + b"[" * 5000 + b"]" * 5000},
            "nested too deeply",
        ),
    }
    for what, (files, says) in extends.items():
        cases.append(Case(f"extends:{what}", files, **_expected(says)))

    # Bad data files for the local variant: name -> (file, content, what the refusal says; None: accepted).
    local = bases["local"]

    def with_source(source: str, content: bytes) -> dict[str, bytes | dict]:
        return {"recipe.yaml": _set(local, ("dataset", "source"), source), source: content}

    not_objects = "must be a JSON list of objects"
    data_files = {
        "binary jsonl": ("data.jsonl", bytes(range(256)) * 8, utf8),
        "latin1 jsonl": ("data.jsonl", '{"question": "caf\xe9", "answer": "1"}\n'.encode("latin-1"), utf8),
        "numbers json": ("data.json", b"[1, 2, 3]", not_objects),
        "scalar json": ("data.json", b"42", not_objects),
        "string json": ("data.json", b'"x"', not_objects),
        "empty json": ("data.json", b"[]", "no rows"),
        "empty object json": ("data.json", b"{}", not_objects),
        "garbage parquet": ("data.parquet", b"not a parquet file", "not a readable parquet file"),
        "empty jsonl": ("data.jsonl", b"", "no rows"),
        "blank jsonl": ("data.jsonl", b"\n\n", "no rows"),
        "header-only csv": ("data.csv", b"question,answer\n", "no rows"),
        "empty csv": ("data.csv", b"", "no rows"),
        "malformed line jsonl": ("data.jsonl", JSONL + b"{not json\n" + JSONL, "data.jsonl:17: invalid JSON"),
        "list line jsonl": ("data.jsonl", JSONL + b"[1, 2]\n", "each line must be a JSON object"),
        "mixed columns jsonl": ("data.jsonl", JSONL + b'{"other": 1}\n', None),
        "one row jsonl": ("data.jsonl", JSONL.splitlines(keepends=True)[0], no_rows),
        "utf16 csv": ("data.csv", "question,answer\n1+1=,2\n".encode("utf-16"), utf8),
        "directory": ("data.jsonl/x", b"", "is a directory, not a file"),
    }
    for what, (source, content, says) in data_files.items():
        if what == "directory":
            files = {"recipe.yaml": local, source: content}
        else:
            files = with_source(source.split("/")[0], content)
        cases.append(Case(f"data:{what}", files, **_expected(says)))
    cases.append(
        Case(
            "data:eval_split file",
            {
                "recipe.yaml": _set(
                    _delete(local, ("dataset", "eval_size")), ("dataset", "eval_split"), "eval.jsonl"
                ),
                "data.jsonl": JSONL,
                "eval.jsonl": JSONL,
            },
            exit=0,
        )
    )
    # Issue 23's items 1-6, one expected outcome each (tests/fuzz_issue23.py).
    from grpo_cli._paths import RECIPES_DIR
    from tests.fuzz_issue23 import cases as issue23_cases

    for what, files, overrides, code, says in issue23_cases(RECIPES_DIR):
        cases.append(Case(f"issue23:{what}", files, overrides, exit=code, says=says))
    return tuple(cases)


def _expected(says: str | None) -> dict:
    """Case fields for a hand-written case: accepted (None), or refused saying `says`."""
    return {"exit": 0} if says is None else {"exit": 2, "says": says}


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@dataclass
class Outcome:
    code: int | str  # the exit code, or "hang" / "crash"
    stderr: str
    seconds: float  # the CPU time validate took: what the case costs, however loaded the machine is


def run_case(case: Case, directory: Path, timeout: float = HANG_S) -> Outcome:
    """Write the case into `directory` and run `grpo-cli validate recipe.yaml` in-process there."""
    from typer.testing import CliRunner

    from grpo_cli.cli import app

    case.write(directory)
    previous_dir = os.getcwd()
    previous = signal.signal(signal.SIGALRM, _alarm)
    os.chdir(directory)
    started = time.process_time()
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        result = CliRunner().invoke(app, ["validate", "recipe.yaml", *case.overrides])
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Hang:
        return Outcome("hang", "", time.process_time() - started)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(previous_dir)
    seconds = time.process_time() - started
    if isinstance(result.exception, _Hang):
        return Outcome("hang", "", seconds)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Outcome("crash", f"{type(result.exception).__name__}: {result.exception}"[:300], seconds)
    return Outcome(result.exit_code, result.stderr, seconds)


def classify(outcome: Outcome) -> str:
    """ "0", "2" or "other" (a crash, a hang, another exit code, or an exit 2 without a clean message)."""
    if outcome.code == 0:
        return "0"
    # Warnings said while validating (the code sandbox's, once per process) may come before the error.
    stderr = "".join(line for line in outcome.stderr.splitlines(True) if not line.startswith("warning: "))
    if outcome.code == 2 and stderr.startswith("error: ") and "Traceback" not in outcome.stderr:
        return "2"
    return "other"


@functools.cache
def fast_sample() -> tuple[Case, ...]:
    """Every FAST_STRIDE-th case of each kind, its first (a shipped recipe as it is) included."""
    by_kind: dict[str, list[Case]] = {}
    for case in corpus():
        by_kind.setdefault(case.kind, []).append(case)
    return tuple(case for cases in by_kind.values() for case in cases[::FAST_STRIDE])


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
