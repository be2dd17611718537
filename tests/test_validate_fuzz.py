"""`validate` is total (issue 11): every input gets exit 0 or a one-line (or one problem list) exit 2, quickly.

The corpus is `tests/fuzz_corpus.py` (over 2000 seeded cases); the fast suite validates every 15th case of each
kind in-process and a handful through a real subprocess, the slow suite all of them, and checks that each took
under TIMEOUT_S of CPU time. Where a case's construction fixes the answer (its `exit`, and what stderr `says`),
that is checked too. Then a curated list of recipes that must be refused, each with the exact line that says what
to change.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import yaml

from tests.fuzz_corpus import (
    FAST_STRIDE,
    JSONL,
    SEED,
    TIMEOUT_S,
    Case,
    Outcome,
    base_recipes,
    classify,
    corpus,
    fast_sample,
    run_case,
)


def _assert_total(case: Case, tmp_path) -> Outcome:
    outcome = run_case(case, tmp_path)
    assert classify(outcome) in ("0", "2"), f"{case.id}: {outcome}"
    if outcome.code == 2:
        lines = outcome.stderr.rstrip("\n").split("\n")
        head, *rest = [line for line in lines if not line.startswith("warning: ")]  # warnings may come first
        # One problem per line, the first MAX_SHOWN of them, then "  ... and M more".
        assert head.startswith("error: ") and all(line.startswith(("  - ", "  ... and ")) for line in rest), (
            outcome.stderr
        )
    _assert_expected(case, outcome)
    return outcome


def _assert_expected(case: Case, outcome: Outcome) -> None:
    if case.exit is not None:
        assert outcome.code == case.exit, f"{case.id}: expected exit {case.exit}, got {outcome}"
    if case.says is not None:
        assert case.says in outcome.stderr, (
            f"{case.id}: stderr does not say {case.says!r}: {outcome.stderr!r}"
        )


def test_corpus_covers_every_kind_and_says_what_it_expects():
    cases = corpus()
    kinds = {case.kind for case in cases}
    shipped = {
        "quickstart",
        "addition",
        "addition-ppo",
        "gsm8k-grpo",
        "gsm8k-ppo",
        "gsm8k-dapo",
        "gsm8k-judge",
        "pipeline",
        "code-grpo",
        "tool-use",
    }
    shipped |= {"pipeline-sft", "pipeline-reward", "pipeline-ppo", "pipeline-grpo"}  # its stages
    shipped |= {"tool-use-sft", "tool-use-grpo"}
    assert kinds == shipped | {"local", "junk", "override", "extends", "data", "issue23"}
    assert len({case.id for case in cases}) == len(cases), "case ids are unique"
    for case in cases:
        assert case.exit in (None, 0, 2) and (case.says is None or case.exit == 2), case.id
        assert "recipe.yaml" in case.files, case.id
    # Every kind has refused cases with a known answer; the hand-written kinds answer each case, accepted or not.
    for kind in kinds:
        assert 2 in {case.exit for case in cases if case.kind == kind}, kind
    for kind in ("junk", "override", "extends", "data", "issue23"):
        assert {case.exit for case in cases if case.kind == kind} == {0, 2}, kind
    # Issue 23's classes: every case says how validate answers, and every refusal what it names.
    assert all(case.exit is not None for case in cases if case.kind == "issue23")
    assert all(case.says for case in cases if case.kind == "issue23" and case.exit == 2)
    # Every base is validated as it is: accepted, unless it names a stage or a run an empty directory lacks.
    alone = {case.kind: case.exit for case in cases if case.id.endswith(":as shipped")}
    assert alone.keys() == shipped | {"local"}
    assert {kind for kind, code in alone.items() if code == 0} >= {
        "addition",
        "addition-ppo",
        "local",
        "pipeline-sft",
    }


def test_the_fast_sample_spreads_over_every_kind():
    sample = fast_sample()
    assert {case.kind for case in sample} == {case.kind for case in corpus()}
    assert 100 <= len(sample) <= len(corpus()) // FAST_STRIDE + 20


FAST = {id(case) for case in fast_sample()}


@pytest.mark.parametrize(
    ("case", "timed"),
    [
        pytest.param(case, False, id=case.id[:80])
        if id(case) in FAST
        else pytest.param(case, True, id=case.id[:80], marks=pytest.mark.slow)
        for case in corpus()
    ],
)
def test_validate_is_total_on_the_corpus(case, timed, tmp_path):
    """Total on every case; in the slow suite also quick (the fast sample's times: the test below)."""
    outcome = _assert_total(case, tmp_path)
    if timed:
        assert outcome.seconds < TIMEOUT_S, f"{case.id} took {outcome.seconds:.1f} s of CPU time"


@pytest.mark.slow
def test_validate_answers_the_fast_sample_quickly(tmp_path_factory):
    took = {case.id: run_case(case, tmp_path_factory.mktemp("case")).seconds for case in fast_sample()}
    assert not [f"{k} took {v:.1f} s of CPU time" for k, v in took.items() if v >= TIMEOUT_S]


SUBPROCESS_CASES = [
    "junk:latin1",
    "junk:deep nesting",
    "data:garbage parquet",
    "extends:binary parent",
    "junk:bom",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_validate_in_a_real_process(case_id, tmp_path):
    (case,) = [c for c in corpus() if c.id == case_id]
    case.write(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "validate", "recipe.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.returncode == case.exit and (case.says or "") in result.stderr, result.stderr


# ---- the curated list: each must be refused with this line ----

QUICKSTART = base_recipes()["addition"]
LOCAL = base_recipes()["local"]


def _merge(base: dict, changes: dict) -> dict:
    from grpo_cli.recipe_files import deep_merge

    return deep_merge(base, changes)


def _case(changes: dict | None = None, base: dict = QUICKSTART, files=None, overrides=(), text=None) -> Case:
    recipe = (
        text if text is not None else yaml.safe_dump(_merge(base, changes or {}), sort_keys=False).encode()
    )
    return Case("curated", {"recipe.yaml": recipe, "data.jsonl": JSONL, **(files or {})}, list(overrides))


def _options(**options) -> Case:
    return _case(overrides=[f"dataset.generate.options.{k}={v}" for k, v in options.items()])


def _local_file(name: str, content: bytes, **changes) -> Case:
    return _case({"dataset": {"source": name, **changes}}, base=LOCAL, files={name: content})


def _prompt(template: str) -> Case:  # in the file: on the command line, YAML reads {...} as a mapping
    return _case({"dataset": {"prompt": template}})


D = "{d}"  # the case's directory, filled in at run time

REFUSED = {
    # dataset.generate.options
    "unknown option": (
        _options(max_operan=1),
        "dataset.generate.options.max_operan: not an option of the addition task (did you mean 'max_operand'?); "
        "its options: min_operand=0, max_operand=9, max_sum=None",
    ),
    "option of the wrong type": (
        _options(max_operand="x"),
        "dataset.generate.options: max_operand must be a whole number, got 'x'",
    ),
    "negative max_operand": (
        _options(max_operand=-1),
        "dataset.generate.options: max_operand must be between 0 and 1000000000, got -1",
    ),
    "absurd max_operand": (
        _options(max_operand=10**12),
        "dataset.generate.options: max_operand must be between 0 and 1000000000, got 1000000000000",
    ),
    "negative min_operand": (
        _options(min_operand=-3),
        "dataset.generate.options: min_operand must be between 0 and 1000000000, got -3",
    ),
    "negative max_sum": (
        _options(max_sum=-1),
        "dataset.generate.options: max_sum must be between 0 and 1000000000, got -1",
    ),
    "max_sum below every sum": (
        _options(min_operand=5, max_sum=9),
        "dataset.generate.options: max_sum (9) is below the smallest sum, 5+5: no problem is left",
    ),
    # rewards
    "rewards: 5": (_case(overrides=["rewards=5"]), "rewards: Input should be a valid list, got 5"),
    "eval.rewards: 5": (_case({"eval": {"rewards": 5}}), "eval.rewards: Input should be a valid list, got 5"),
    "NUL in a reward name": (
        _case({"rewards": [{"name": "accu\x00racy"}]}),
        "rewards[0].name: contains a NUL byte, got 'accu\\x00racy'",
    ),
    "model: with nothing after it": (
        _case({"rewards": [{"name": "model:"}]}),
        "rewards[0].name: model: needs a Hub id or a local directory, e.g. model:./my-reward-model, got 'model:'",
    ),
    "NaN reward weight": (
        _case({"rewards": [{"name": "accuracy", "weight": float("nan")}]}),
        "rewards[0].weight: Input should be a finite number, got nan",
    ),
    "infinite reward weight": (
        _case({"rewards": [{"name": "accuracy", "weight": float("inf")}]}),
        "rewards[0].weight: Input should be a finite number, got inf",
    ),
    "eval reward that is a training reward": (
        _case(text=b"extends: addition\neval: {rewards: [{name: accuracy}]}\n"),
        "eval.rewards[0] (accuracy) is already a training reward, whose metrics eval reports anyway: "
        "remove it from eval.rewards",
    ),
    # local data files
    "binary .jsonl": (
        _local_file("data.jsonl", bytes(range(256))),
        f"dataset {D}/data.jsonl: not UTF-8 text (byte 0x80 at offset 128); save it as UTF-8",
    ),
    "Latin-1 .jsonl": (
        _local_file("data.jsonl", '{"question": "caf\xe9"}\n'.encode("latin-1")),
        f"dataset {D}/data.jsonl: not UTF-8 text (byte 0xe9 at offset 17); save it as UTF-8",
    ),
    "JSON list of numbers": (
        _local_file("data.json", b"[1, 2, 3]"),
        f"dataset {D}/data.json: must be a JSON list of objects (one per row) of columns",
    ),
    "JSON scalar": (
        _local_file("data.json", b"42"),
        f"dataset {D}/data.json: must be a JSON list of objects (one per row) of columns",
    ),
    "garbage .parquet": (
        _local_file("data.parquet", b"not parquet"),
        f"dataset {D}/data.parquet: not a readable parquet file (ArrowInvalid: Parquet magic bytes not found in "
        "footer. Either the file is corrupted or this is not a parquet file.)",
    ),
    "empty .jsonl": (_local_file("data.jsonl", b""), f"dataset {D}/data.jsonl: no rows"),
    "header-only .csv": (
        _local_file("data.csv", b"question,answer\n"),
        f"dataset {D}/data.csv: no rows (a header line, then one line per row)",
    ),
    ".jsonl with one malformed line": (
        _local_file("data.jsonl", JSONL + b"{not json\n"),
        f"dataset {D}/data.jsonl:17: invalid JSON: Expecting property name enclosed in double quotes",
    ),
    # the recipe file itself
    "Latin-1 recipe": (
        _case(text="seed: 1 # caf\xe9\n".encode("latin-1")),
        f"{D}/recipe.yaml: not UTF-8 text (byte 0xe9 at offset 13); save the recipe as UTF-8",
    ),
    "UTF-16 recipe": (
        _case(text="seed: 1\n".encode("utf-16")),
        f"{D}/recipe.yaml: not UTF-8 text (byte 0xff at offset 0); save the recipe as UTF-8",
    ),
    "extends a binary file": (
        _case(text=b"extends: p.yaml\n", files={"p.yaml": bytes(range(256))}),
        f"{D}/p.yaml: not UTF-8 text (byte 0x80 at offset 128); save the recipe as UTF-8",
    ),
    "deeply nested YAML": (
        _case(text=b"seed: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
        f"{D}/recipe.yaml: nested too deeply to be a recipe",
    ),
    "nested more than 64 levels": (
        _case(text=b"seed: " + b"[" * 80 + b"]" * 80 + b"\n"),
        f"{D}/recipe.yaml: nested more than 64 levels deep; that is no recipe",
    ),
    "duplicate key": (
        _case(text=b"seed: 1\nalgorithm: grpo\nseed: 2\n"),
        f"{D}/recipe.yaml:3: invalid YAML: duplicate key 'seed' (also on line 1): give each key once",
    ),
    # trainer values TRL or transformers refuse, or crash on
    "learning rate NaN": (
        _case(overrides=["trainer.learning_rate=nan"]),
        "trainer.learning_rate: must be a finite number, got nan",
    ),
    "negative learning rate": (
        _case(overrides=["trainer.learning_rate=-1e-5"]),
        "trainer.learning_rate: must be at least 0, got -1e-05",
    ),
    "zero batch size": (
        _case(overrides=["trainer.per_device_train_batch_size=0"]),
        "trainer.per_device_train_batch_size: must be at least 1, got 0",
    ),
    "zero gradient accumulation": (
        _case(overrides=["trainer.gradient_accumulation_steps=0"]),
        "trainer.gradient_accumulation_steps: must be at least 1, got 0",
    ),
    "zero logging steps": (
        _case(overrides=["trainer.logging_steps=0"]),
        "trainer.logging_steps: must be above 0, got 0",
    ),
    "negative save steps": (
        _case(overrides=["trainer.save_steps=-5"]),
        "trainer.save_steps: must be above 0, got -5",
    ),
    "fractional save steps above 1": (
        _case(overrides=["trainer.save_steps=2.5"]),
        "trainer.save_steps: a whole number of steps above 1 (below 1: a fraction of the run), got 2.5",
    ),
    "zero temperature": (
        _case(overrides=["trainer.temperature=0"]),
        "trainer.temperature: must be above 0, got 0",
    ),
    "zero max_completion_length": (
        _case(overrides=["trainer.max_completion_length=0"]),
        "trainer.max_completion_length: must be at least 1, got 0",
    ),
    "generation_batch_size not a multiple of the batch": (
        _case(overrides=["trainer.generation_batch_size=356"]),
        "trainer.generation_batch_size: 356 is not a multiple of processes (1) x per_device_train_batch_size "
        "(352) = 352",
    ),
    "generation_batch_size with steps_per_generation": (
        _case(overrides=["trainer.generation_batch_size=352", "trainer.steps_per_generation=1"]),
        "trainer: give generation_batch_size or steps_per_generation, not both",
    ),
    "unknown scheduler": (
        _case(overrides=["trainer.lr_scheduler_type=cosin"]),
        "trainer.lr_scheduler_type: expected Literal['linear', 'cosine', 'cosine_with_restarts', 'polynomial', "
        "'constant', 'constant_with_warmup', 'inverse_sqrt', 'reduce_lr_on_plateau', 'cosine_with_min_lr', "
        "'cosine_warmup_with_min_lr', 'warmup_stable_decay', 'greedy'], got 'cosin' (input should be 'linear', "
        "'cosine', 'cosine_with_restarts', 'polynomial', 'constant', 'constant_with_warmup', 'inverse_sqrt', "
        "'reduce_lr_on_plateau', 'cosine_with_min_lr', 'cosine_warmup_with_min_lr', 'warmup_stable_decay' or "
        "'greedy')",
    ),
    # seed, model, port
    "negative seed": (
        _case(overrides=["seed=-1"]),
        "seed: Input should be greater than or equal to 0, got -1",
    ),
    "seed beyond numpy": (
        _case(overrides=["seed=4294967296"]),
        "seed: Input should be less than or equal to 4294967295, got 4294967296",
    ),
    "heads that do not divide hidden_size": (
        _case(overrides=["model.from_config.num_attention_heads=3"]),
        "model.from_config: num_attention_heads (3) must divide hidden_size (64)",
    ),
    "empty vocabulary": (
        _case({"model": {"from_config": {"vocabulary": ""}}}),
        "model.from_config.vocabulary: String should have at least 1 character, got ''",
    ),
    "unknown model type": (
        _case(overrides=["model.from_config.model_type=qwen22"]),
        "model.from_config.model_type: transformers has no causal LM of type 'qwen22' (did you mean 'qwen2'?); "
        "e.g. qwen2, llama, gpt2",
    ),
    "a model path that does not exist": (
        _case({"model": {"from_config": None, "name_or_path": "/data/my-modle"}}),
        "model.name_or_path: no such directory: /data/my-modle (a Hub id looks like org/name)",
    ),
    "negative port": (
        _case(overrides=["distributed.main_process_port=-1"]),
        "distributed.main_process_port: Input should be greater than or equal to 1, got -1",
    ),
    # prompt templates
    "positional field {}": (
        _prompt("Q: {}"),
        "dataset.prompt: {} is positional; name a column, e.g. {question} (write {{ and }} for literal braces)",
    ),
    "positional field {0}": (
        _prompt("{0}"),
        "dataset.prompt: {0} is positional; name a column, e.g. {question} (write {{ and }} for literal braces)",
    ),
    "conversion": (
        _prompt("{question!r}"),
        "dataset.prompt: {question!r} has a conversion (!r); write {question} (write {{ and }} for literal braces)",
    ),
    "nested format spec": (
        _prompt("{question:{width}}"),
        "dataset.prompt: {question:{width}} nests a field in its format spec (write {{ and }} for literal braces)",
    ),
    "attribute access": (
        _prompt("{question.upper}"),
        "dataset.prompt: {question.upper} reads an attribute or item; name a column only "
        "(write {{ and }} for literal braces)",
    ),
    "unbalanced brace": (
        _prompt("Q {question"),
        "dataset.prompt: bad template 'Q {question': expected '}' before end of string "
        "(write {{ and }} for literal braces)",
    ),
    "format spec the column cannot take": (
        _prompt("{question:d}"),
        "dataset.prompt: cannot fill '{question:d}' from the row {'question': '3+2='}: "
        "ValueError: Unknown format code 'd' for object of type 'str'",
    ),
    # held-out rows
    "eval_size that leaves no training rows": (
        _case(overrides=["dataset.eval_size=55"]),
        "dataset.eval_size=55 leaves no training rows (dataset has 55 prompts)",
    ),
    "eval_ratio that leaves no training rows": (
        _case(overrides=["dataset.eval_size=null", "dataset.eval_ratio=0.99"]),
        "dataset.eval_ratio=0.99 leaves no training rows (dataset has 55 prompts)",
    ),
    "generated dataset smaller than its held-out part": (
        _case(overrides=["dataset.generate.size=5"]),
        "dataset.eval_size=11 leaves no training rows (dataset has 5 prompts)",
    ),
    # switching algorithms
    "PPO with GRPO's length setting": (
        _case(overrides=["algorithm=ppo", "trainer.num_generations=null"]),
        "trainer.num_generations: not a field of TRL's PPOConfig (PPO samples one completion per prompt; remove it)",
    ),
}


def _refusal(case: Case, tmp_path) -> str:
    outcome = run_case(case, tmp_path)
    assert outcome.code == 2, outcome
    return outcome.stderr.replace(str(tmp_path), D)


@pytest.mark.parametrize("name", list(REFUSED))
def test_curated_case_is_refused_with_its_line(name, tmp_path):
    case, line = REFUSED[name]
    stderr = _refusal(case, tmp_path)
    assert f"{line}\n" in stderr.replace("error: recipe.yaml: ", "  - ").replace("error: ", "  - "), stderr


def test_switching_to_ppo_points_at_response_length(tmp_path):
    stderr = _refusal(_case(overrides=["algorithm=ppo"]), tmp_path)
    assert (
        "  - trainer.max_completion_length: not a field of TRL's PPOConfig (PPO's name for it is response_length)\n"
        in stderr
    )
    assert "num_sample_generations" not in stderr


def test_five_mistakes_in_one_round(tmp_path):
    case = _case(
        {"lora": {"r": "four"}, "rewards": [{"name": "acuracy"}], "dataset": {"prompt": "{questio}"}},
        overrides=["trainer.learning_rat=1e-5", "trainer.temperature=0"],
    )
    stderr = _refusal(case, tmp_path)
    assert stderr.splitlines() == [
        "error: recipe.yaml: 5 problems:",
        "  - lora.r: Input should be a valid integer, unable to parse string as an integer, got 'four'",
        "  - trainer.learning_rat: not a field of TRL's GRPOConfig (did you mean 'learning_rate'?)",
        "  - trainer.temperature: must be above 0, got 0",
        stderr.splitlines()[4],
        "  - dataset.prompt uses column 'questio', which the dataset does not have; columns: question, answer",
    ]
    assert stderr.splitlines()[4].startswith(
        "  - rewards[0]: unknown reward 'acuracy' (did you mean 'accuracy'"
    )


def test_a_huge_operand_range_is_sampled_not_listed(tmp_path):
    from grpo_cli import tasks

    # Listing the 10**14 pairs would never end: run_case would stop it as a "hang".
    outcome = run_case(_options(max_operand=10_000_000, max_sum="null"), tmp_path)
    assert outcome.code == 0, outcome
    rows = tasks.addition_task(size=50, seed=1, max_operand=10_000_000)
    assert len({r["question"] for r in rows}) == 50
    assert all(int(r["answer"]) == sum(map(int, r["question"].rstrip("=").split("+"))) for r in rows)
    # Small ranges keep the exact order they always had (the addition recipe's split does not move).
    assert [r["question"] for r in tasks.addition_task(size=3, seed=0, max_sum=9)] == ["3+2=", "1+2=", "5+0="]


def test_json_lines_are_read_as_train_reads_them(tmp_path):
    from grpo_cli import data

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"q": "1"}) + "\n\n" + json.dumps({"q": "2"}) + "\n")
    local = data.read_local(path)
    assert (local.columns, local.rows, local.first) == (["q"], 2, {"q": "1"})


# ---- the other commands that read recipes: no traceback either ----

FILE_CASES = [c for c in corpus() if c.kind in ("junk", "extends", "data", "override")]


def _run_command(case: Case, tmp_path, argv: list[str]):
    import os

    from typer.testing import CliRunner

    from grpo_cli.cli import app

    case.write(tmp_path)
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        return CliRunner().invoke(app, argv)
    finally:
        os.chdir(previous)


def _assert_clean(result, what: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{what}: {result.exception!r}"
    )
    assert result.exit_code in (0, 2), f"{what}: exit {result.exit_code}"
    if result.exit_code == 2:
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr


FILE_SAMPLE = set(c.id for c in random.Random(SEED).sample(FILE_CASES, 30))


@pytest.mark.parametrize(
    "case",
    [c if c.id in FILE_SAMPLE else pytest.param(c, marks=pytest.mark.slow) for c in FILE_CASES],
    ids=lambda c: c.id[:80],
)
def test_train_and_recipes_show_refuse_what_validate_refuses(case, tmp_path):
    validated = run_case(case, tmp_path)
    _assert_expected(case, validated)
    _assert_clean(_run_command(case, tmp_path, ["recipes", "show", "recipe.yaml"]), "recipes show")
    if validated.code == 2:  # train checks the same before loading anything: the same one line, exit 2
        result = _run_command(case, tmp_path, ["train", "recipe.yaml", *case.overrides, "-o", "run"])
        _assert_clean(result, "train")
        assert result.exit_code == 2 and result.stderr == validated.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id[:80])
def test_rewards_test_with_a_broken_recipe_is_one_line(case, tmp_path):
    if case.overrides:
        pytest.skip("rewards test takes no overrides")
    _assert_clean(
        _run_command(case, tmp_path, ["rewards", "test", "--recipe", "recipe.yaml", "-c", "5"]),
        "rewards test",
    )
