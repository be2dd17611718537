"""Every public reward of the installed `trl.rewards`, named from a recipe as `trl.rewards:<name>` (the factories
with `args`), and an open-r1-style reward file, scored the same in `rewards test`, GRPO and PPO training and
`eval`: each score is compared with TRL's own function called directly on the same completions and token ids.

The slow runs use a tiny character-level model whose vocabulary holds what TRL's rewards look for (`<think>`,
`\\boxed{}`, digits), saved with a chat template: TRL's format and accuracy rewards read chat completions.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_cli import registry, reward_binding, scoring
from grpo_cli.errors import UserError
from grpo_cli.recipe import RewardEntry
from grpo_cli.signatures import TRAINER_KWARGS

trl_rewards = pytest.importorskip("trl.rewards")

# TRL's accuracy rewards import math-verify (the test extra: pip install -e '.[test]'); without it they cannot score,
# and the "missing dependency" tests would see latex2sympy2_extended, which math-verify brings, missing too.
MATH_VERIFY = {"accuracy_reward", "reasoning_accuracy_reward", "get_cosine_scaled_reward"}
needs_math_verify = pytest.mark.skipif(
    importlib.util.find_spec("math_verify") is None,
    reason="needs math-verify, which TRL's accuracy rewards import (pip install -e '.[test]')",
)

# Every public reward of trl.rewards, with the args a recipe gives it (the factories need some).
TRL_REWARDS = {
    "accuracy_reward": {},
    "reasoning_accuracy_reward": {},
    "think_format_reward": {},
    "get_cosine_scaled_reward": {"max_len": 8},
    "get_repetition_penalty_reward": {"ngram_size": 2, "max_penalty": -1.0},
    "get_soft_overlong_punishment": {"max_completion_len": 6, "soft_punish_cache": 4},
}
# The name each is logged under: TRL's (a factory's reward carries its own __name__).
METRIC_NAMES = {
    "accuracy_reward": "accuracy_reward",
    "reasoning_accuracy_reward": "reasoning_accuracy_reward",
    "think_format_reward": "think_format_reward",
    "get_cosine_scaled_reward": "cosine_scaled_reward",
    "get_repetition_penalty_reward": "repetition_penalty_reward",
    "get_soft_overlong_punishment": "soft_overlong_punishment_reward",
}
VOCABULARY = "0123456789+=<>/\\{}thinkboxed \n"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
)

# An open-r1-style reward file: chat completions (`completion[0]["content"]`), a `solution` column, and one reward
# that records everything it is given (the completions, their token ids, the trainer state) and logs through
# log_metric and log_extra, so the tests can call TRL's functions on exactly what training scored.
OPEN_R1_REWARDS = r'''
import json
import re


def format_reward(completions, **kwargs):
    """open-r1's: 1.0 when the completion is <think>...</think><answer>...</answer>."""
    pattern = r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$"
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.match(pattern, c, re.DOTALL | re.MULTILINE) else 0.0 for c in contents]


def recorder(completions, solution, completion_ids, trainer_state, log_metric, log_extra, path, **kwargs):
    """Scores 0; appends what it was called with to `path` (one JSON line per call)."""
    with open(path, "a") as f:
        f.write(json.dumps({
            "completions": completions,
            "solution": solution,
            "completion_ids": completion_ids,
            "global_step": trainer_state.global_step,
            "max_steps": trainer_state.max_steps,
        }) + "\n")
    log_metric("recorded_completions", float(len(completions)))
    log_extra("ids_length", [len(ids) for ids in completion_ids])
    return [0.0] * len(completions)
'''


def trl_function(name: str, args: dict):
    """TRL's reward as TRL's docs call it: the function, or what the factory returns for `args`."""
    target = getattr(trl_rewards, name)
    return target(**args) if name.startswith("get_") else target


def direct_scores(name: str, completions: list, solution: list, completion_ids: list) -> list:
    """TRL's function called directly, with what GRPOTrainer passes it."""
    return trl_function(name, TRL_REWARDS[name])(
        prompts=[[{"role": "user", "content": "q"}]] * len(completions),
        completions=completions,
        completion_ids=completion_ids,
        solution=solution,
    )


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


COMPLETIONS = [
    "<think>\nadd them\n</think>\n\\boxed{3}",
    "<think>3</think> \\boxed{4}",
    "\\boxed{3}",
    "33333333",
    "<think>",
    "",
]


def recipe_entries(tmp_path: Path, record: Path) -> list[dict]:
    (tmp_path / "open_r1_rewards.py").write_text(OPEN_R1_REWARDS)
    return [{"name": f"trl.rewards:{name}", "args": args} for name, args in TRL_REWARDS.items()] + [
        {"name": "./open_r1_rewards.py:format_reward"},
        {"name": "./open_r1_rewards.py:recorder", "args": {"path": str(record)}, "weight": 0.0},
    ]


# ---- binding and scoring ----


def bound_function(name: str, fn) -> reward_binding.BoundReward:
    """A reward function of a test, bound as a recipe entry naming it would be."""
    return reward_binding.BoundReward(
        name,
        RewardEntry(name=name),
        registry.PluginSpec(name, "file", lambda: fn, reserved=TRAINER_KWARGS),
        fn,
    )


def test_every_public_trl_reward_is_covered():
    public = {name for names in trl_rewards._import_structure.values() for name in names}
    assert public == set(TRL_REWARDS)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs_math_verify) if n in MATH_VERIFY else n for n in sorted(TRL_REWARDS)]
)
def test_each_trl_reward_scores_as_trl_does(name):
    bound = reward_binding.bind(RewardEntry(name=f"trl.rewards:{name}", args=TRL_REWARDS[name]), "rewards[0]")
    assert bound.name == METRIC_NAMES[name]
    assert bound.factory == name.startswith("get_")
    completions = [chat(c) for c in COMPLETIONS]
    solution = ["3"] * len(completions)
    ids = scoring.text_ids(completions)
    assert ids[0] == [ord(c) for c in COMPLETIONS[0]]
    (scores,) = scoring.score_table(
        [bound], [[{"role": "user", "content": "q"}]] * len(completions), completions, {"solution": solution}
    )
    expected = direct_scores(name, completions, solution, ids)
    assert scores == expected
    assert any(s not in (0.0, None) for s in expected)  # not vacuous: every reward scores something here


@needs_math_verify
def test_the_columns_of_trl_rewards_are_known_before_training():
    columns = {
        name: reward_binding.bind(RewardEntry(name=f"trl.rewards:{name}", args=args), "r").columns
        for name, args in TRL_REWARDS.items()
    }
    assert columns == {
        "accuracy_reward": ["solution"],
        "reasoning_accuracy_reward": ["solution"],
        "think_format_reward": [],
        "get_cosine_scaled_reward": ["solution"],
        "get_repetition_penalty_reward": [],
        "get_soft_overlong_punishment": [],
    }


def test_a_factory_is_called_once_with_its_args_and_checked_like_a_reward(tmp_path):
    (tmp_path / "factories.py").write_text(
        "CALLS = []\n"
        "def make_length(scale):\n"
        "    CALLS.append(scale)\n"
        "    def length(completions, **kwargs):\n"
        "        return [scale * len(c) for c in completions]\n"
        "    return length\n"
        "def make_nothing(scale):\n"
        "    return 3\n"
        "def make_no_completions():\n"
        "    return lambda prompts: [0.0]\n"
    )
    bound = reward_binding.bind(
        RewardEntry(name=f"{tmp_path}/factories.py:make_length", args={"scale": 2}), "r"
    )
    assert bound.name == "length" and bound.factory
    assert scoring.score_table([bound], ["p", "p"], ["ab", "abc"], {}) == [[4.0, 6.0]]
    assert sys.modules[bound.fn.__module__].CALLS == [2]

    def error(attr, args):
        with pytest.raises(UserError) as info:
            reward_binding.bind(RewardEntry(name=f"{tmp_path}/factories.py:{attr}", args=args), "rewards[0]")
        return str(info.value).split(": ", 1)[1]

    assert error("make_length", {}) == "missing argument 'scale': set it in args; its arguments: scale"
    assert error("make_length", {"scael": 1}).startswith("unknown argument 'scael' (did you mean 'scale'?)")
    assert error("make_nothing", {"scale": 1}) == "calling it with its args returned 3, not a reward"
    assert error("make_no_completions", {}) == (
        "it takes no `completions` parameter (nor does what it returns when called with its args); a reward is "
        "fn(prompts, completions, **columns) -> list[float | None]"
    )


def test_rewards_ls_describes_a_factory_by_its_arguments():
    from grpo_cli.commands.rewards import _describe

    spec = registry.PluginSpec(
        "rep", "built-in", lambda: trl_rewards.get_repetition_penalty_reward, reserved=TRAINER_KWARGS
    )
    lines = _describe("rep", spec).splitlines()
    assert lines[2] == "    args: ngram_size=3, max_penalty=-1.0"
    assert len(lines) == 3  # no columns: the reward it returns reads none it could name before being called


def test_an_optional_import_guard_reaches_only_the_rewards_that_use_it(tmp_path, monkeypatch):
    (tmp_path / "guarded.py").write_text(
        "def is_acme_sympy_available():\n    return False\n"
        "if is_acme_sympy_available():\n    from acme_sympy import simplify\nelse:\n    from json import dumps\n"
        "def _check(text):\n    return simplify(text)\n"
        "def symbolic(completions, **kwargs):\n    return [float(bool(_check(c))) for c in completions]\n"
        "def plain(completions, **kwargs):\n    return [dumps(c) and 1.0 for c in completions]\n"
    )
    with pytest.raises(
        UserError, match=r"needs the module 'acme_sympy', which is not installed: pip install acme-sympy$"
    ):
        reward_binding.bind(RewardEntry(name=f"{tmp_path}/guarded.py:symbolic"), "rewards[0]")
    assert reward_binding.bind(RewardEntry(name=f"{tmp_path}/guarded.py:plain"), "rewards[0]").name == "plain"


@needs_math_verify
def test_a_missing_optional_dependency_is_found_at_binding(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a)
    )
    for name in sorted(MATH_VERIFY):
        with pytest.raises(UserError) as info:
            reward_binding.bind(RewardEntry(name=f"trl.rewards:{name}", args=TRL_REWARDS[name]), "rewards[0]")
        assert str(info.value) == (
            f"rewards[0] (trl.rewards:{name}) needs the module 'math_verify', which is not installed: "
            "pip install math-verify"
        )
    # The rewards of trl.rewards that do not use it still bind.
    for name in ("think_format_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment"):
        reward_binding.bind(RewardEntry(name=f"trl.rewards:{name}", args=TRL_REWARDS[name]), "rewards[0]")


@needs_math_verify
def test_validate_refuses_a_missing_optional_dependency_in_one_line(cli, tiny_recipe, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a)
    )
    path = tiny_recipe({"rewards": [{"name": "trl.rewards:accuracy_reward"}]})
    result = cli("validate", path)
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "rewards[0] (trl.rewards:accuracy_reward) needs the module 'math_verify', which is not installed: "
            "pip install math-verify"
        )
    )


@needs_math_verify
def test_validate_binds_trl_rewards_and_factories_without_importing_torch(tmp_path):
    rows = [{"question": "1+2", "solution": "3"}] * 4
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "model": {"name_or_path": "org/model"},
        "dataset": {"source": "data.jsonl", "prompt": "{question}"},
        "rewards": recipe_entries(tmp_path, tmp_path / "record.jsonl"),
        "trainer": {"num_generations": 2, "per_device_train_batch_size": 2},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    code = (
        "import sys\nfrom grpo_cli.validation import validate\n"
        f"validate({str(tmp_path / 'recipe.yaml')!r})\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rewards_get_the_log_and_state_they_are_given():
    log = scoring.RewardLog()
    state = scoring.run_state(3, 10, epoch=0.5)
    seen = {}

    def reward(completions, trainer_state, log_metric, log_extra, completion_ids, **kwargs):
        seen.update(step=trainer_state.global_step, max_steps=trainer_state.max_steps, ids=completion_ids)
        log_metric("m", 2.0)
        log_extra("e", ["x"] * len(completions))
        return [1.0] * len(completions)

    bound = bound_function("reward", reward)
    scoring.score_table([bound], ["p"], ["ab"], {}, completion_ids=[[7, 8]], trainer_state=state, log=log)
    scoring.score_table([bound], ["p"], ["ab"], {}, completion_ids=[[7, 8]], trainer_state=state, log=log)
    log.log_metric("m", 5.0)
    assert seen == {"step": 3, "max_steps": 10, "ids": [[7, 8]]}
    assert log.take_metrics() == {"m": 3.0} and log.take_metrics() == {}
    assert log.take_extra() == {"e": ["x", "x"]} and log.take_extra() == {}


def test_ppo_bridge_gives_rewards_ids_state_and_logs_metrics():
    from types import SimpleNamespace

    from grpo_cli.algorithms.ppo_bridge import RolloutRewards

    bound = reward_binding.bind(
        RewardEntry(
            name="trl.rewards:get_soft_overlong_punishment", args=TRL_REWARDS["get_soft_overlong_punishment"]
        ),
        "r",
    )
    seen = []

    def steps(completions, trainer_state, log_metric, **kwargs):
        seen.append((trainer_state.global_step, trainer_state.max_steps))
        log_metric("curriculum", float(trainer_state.global_step))
        return [0.0] * len(completions)

    scorer = RolloutRewards([bound, bound_function("steps", steps)])
    state = SimpleNamespace(global_step=0, max_steps=4)
    scorer.on_train_begin(None, state, None)
    ids = [[1] * 2, [1] * 3, [1] * 5, [1] * 9]
    assert scorer(["p"] * 4, ["a"] * 4, {}, completion_ids=ids) == [0.0, -0.25, -0.75, -1.0]
    state.global_step = 1
    scorer(["p"], ["a"], {}, completion_ids=[[1]])
    logs = {"objective/scores": 0.0}
    scorer.on_log(None, state, None, logs=logs)
    assert seen == [(0, 4), (1, 4)]
    assert logs["rewards/soft_overlong_punishment_reward/mean"] == pytest.approx(-2.0 / 5)
    assert logs["curriculum"] == 0.5


def test_the_state_eval_gives_rewards(tmp_path, tiny_recipe):
    from grpo_cli.model_sources import ModelSource
    from grpo_cli.recipe import load_recipe
    from grpo_cli.workflows.evaluate_generations import evaluated_state

    recipe = load_recipe(tiny_recipe())
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 4}))
    (run / "summary.json").write_text(json.dumps({"steps": 4}))
    assert vars(evaluated_state(None, recipe))["global_step"] == 0
    assert evaluated_state(None, recipe).max_steps == 4  # the recipe's trainer.max_steps
    final = evaluated_state(ModelSource("adapter", path=run, run_dir=run), recipe)
    assert (final.global_step, final.max_steps) == (4, 4)
    checkpoint = ModelSource("adapter", path=run / "checkpoint-2", run_dir=run)
    assert (
        evaluated_state(checkpoint, recipe).global_step,
        evaluated_state(checkpoint, recipe).max_steps,
    ) == (2, 4)


# ---- rewards test ----


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the tables `rewards test` prints, as lists of cells."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def number(cell: str):
    return None if cell == "None" else float(cell)


@needs_math_verify
def test_rewards_test_chat_gives_message_lists(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    args = []
    for text in COMPLETIONS:
        args += ["-c", text]
    names = ["think_format_reward", "accuracy_reward"]
    result = cli(
        "rewards",
        "test",
        *[a for n in names for a in ("-r", f"trl.rewards:{n}")],
        "--chat",
        "-p",
        "q",
        "--column",
        "solution=3",
        *args,
    )
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    completions = [chat(c) for c in COMPLETIONS]
    ids = scoring.text_ids(completions)
    for column, name in enumerate(names, start=1):
        expected = direct_scores(name, completions, ["3"] * len(COMPLETIONS), ids)
        assert [number(r[column]) for r in rows] == pytest.approx(expected, abs=5e-6)
    # What accuracy_reward logs with log_extra is shown as columns.
    assert rows[0][-1] == "[3, '3']" and rows[-1][-1] == "[unparseable]"


def test_rewards_test_completion_ids_are_code_points_or_the_given_tokenizer(cli, tmp_path, monkeypatch):
    from grpo_cli.models import char_tokenizer

    monkeypatch.setenv("COLUMNS", "400")
    char_tokenizer("ab").save_pretrained(tmp_path / "ab")  # "é" is one unknown token to it
    penalty = ["-r", "trl.rewards:get_soft_overlong_punishment", "--arg", "max_completion_len=4"]
    penalty += ["--arg", "soft_punish_cache=2"]
    texts = ["ab", "abé", "abab"]  # 2, 3 and 4 characters; "é" is 2 bytes in UTF-8, one code point
    result = cli("rewards", "test", *penalty, *[a for t in texts for a in ("-c", t)])
    assert result.exit_code == 0, result.output
    assert [number(r[1]) for r in table_rows(result.stdout)] == [0.0, -0.5, -1.0]
    texts = ["abé", "aaaa"]
    result = cli(
        "rewards", "test", *penalty, "--tokenizer", tmp_path / "ab", *[a for t in texts for a in ("-c", t)]
    )
    assert result.exit_code == 0, result.output
    assert [number(r[1]) for r in table_rows(result.stdout)] == [-0.5, -1.0]


def test_rewards_test_chat_with_a_recipe_is_refused(cli, tiny_recipe):
    result = cli("rewards", "test", "--recipe", tiny_recipe(), "--chat", "-c", "1")
    assert result.exit_code == 2
    assert "--chat is for scoring without a recipe" in result.stderr


# ---- a chat model, for the end-to-end paths ----


@pytest.fixture
def chat_model(tmp_path) -> Path:
    from grpo_cli.models import build_from_config
    from grpo_cli.recipe import FromConfig

    spec = FromConfig(vocabulary=VOCABULARY, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    model, tokenizer = build_from_config(spec, seed=0)
    tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(tmp_path / "chat-model")
    tokenizer.save_pretrained(tmp_path / "chat-model")
    return tmp_path / "chat-model"


def write_recipe(tmp_path: Path, chat_model: Path, algorithm: str) -> tuple[Path, Path]:
    rows = [{"question": f"{a}+{b}", "solution": str(a + b)} for a in range(4) for b in range(4)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = tmp_path / f"record-{algorithm}.jsonl"
    trainer = {"learning_rate": 0.01, "max_steps": 2, "per_device_train_batch_size": 8, "save_steps": 1}
    if algorithm == "grpo":
        trainer.update(num_generations=4, max_completion_length=8, temperature=1.5)
    else:
        trainer.update(response_length=8, temperature=1.5)
    recipe = {
        "algorithm": algorithm,
        "seed": 0,
        "model": {"name_or_path": str(chat_model)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "dataset": {"source": "data.jsonl", "prompt": "{question}", "chat_template": True, "eval_size": 4},
        "rewards": recipe_entries(tmp_path, record),
        "trainer": trainer,
        "output_dir": str(tmp_path / "runs" / algorithm),
    }
    path = tmp_path / f"{algorithm}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path, record


def recorded(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def trl_scores_of(call: dict) -> dict[str, list]:
    """TRL's functions called directly on what the recorder was given in one call."""
    return {
        METRIC_NAMES[name]: direct_scores(name, call["completions"], call["solution"], call["completion_ids"])
        for name in TRL_REWARDS
    }


@needs_math_verify
def test_rewards_test_with_a_recipe_uses_its_tokenizer_and_chat_shape(cli, tmp_path, chat_model, monkeypatch):
    from grpo_cli.models import load_tokenizer

    monkeypatch.setenv("COLUMNS", "400")
    path, record = write_recipe(tmp_path, chat_model, "grpo")
    args = [a for text in COMPLETIONS for a in ("-c", text)]
    result = cli("rewards", "test", "--recipe", path, "--row", "2", "--step", "1", *args)
    assert result.exit_code == 0, result.output
    (call,) = recorded(record)
    # As grpo-cli loads it (models.load_tokenizer): a tokenizer saved from a tokenizers object loads as saved,
    # spaces kept, where AutoTokenizer picks Qwen2Tokenizer, which drops them.
    tokenizer = load_tokenizer(str(chat_model))
    assert call["completions"] == [chat(c) for c in COMPLETIONS]
    assert call["completion_ids"] == [tokenizer.encode(c, add_special_tokens=False) for c in COMPLETIONS]
    assert (call["solution"], call["global_step"], call["max_steps"]) == (["2"] * 6, 1, 2)
    rows = table_rows(result.stdout)
    for column, scores in enumerate(trl_scores_of(call).values(), start=1):
        assert [number(r[column]) for r in rows] == pytest.approx(scores, abs=5e-6)
    assert "log_metric: recorded_completions=6" in result.stdout


# ---- training and eval (slow) ----


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_step_means_agree(run: Path, calls: list[dict], tokenizer) -> None:
    """Each logged step's mean of each TRL reward equals TRL's function on the completions of that step."""
    rows = metrics_rows(run)
    assert [r["step"] for r in rows] == [1, 2] and len(calls) == 2
    assert [c["global_step"] for c in calls] == [0, 1] and {c["max_steps"] for c in calls} == {2}
    for row, call in zip(rows, calls, strict=True):
        for i, ids in enumerate(call["completion_ids"]):  # the token ids are those of the text scored
            assert tokenizer.decode(ids, skip_special_tokens=True) == call["completions"][i][0]["content"]
        for name, scores in trl_scores_of(call).items():
            valid = [s for s in scores if s is not None]
            assert row[f"rewards/{name}"] == pytest.approx(sum(valid) / len(valid), abs=1e-5), name
        assert row["recorded_completions"] == len(call["completions"])  # log_metric reaches metrics.jsonl
    lengths = {len(ids) for call in calls for ids in call["completion_ids"]}
    assert len(lengths) > 1  # not vacuous: the length-based rewards see different lengths


@pytest.mark.slow
@needs_math_verify
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_training_and_eval_score_trl_rewards_as_trl_does(cli, tmp_path, chat_model, algorithm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    path, record = write_recipe(tmp_path, chat_model, algorithm)
    result = cli("train", path)
    assert result.exit_code == 0, result.output + str(result.exception)
    run = tmp_path / "runs" / algorithm
    assert_step_means_agree(run, recorded(record), tokenizer)

    record.unlink()
    result = cli("eval", path, "--adapter", run)
    assert result.exit_code == 0, result.output + str(result.exception)
    (call,) = recorded(record)
    assert (call["global_step"], call["max_steps"]) == (2, 2)  # the evaluated run's final state
    samples = [json.loads(line) for line in (run / "eval" / "eval_samples.jsonl").read_text().splitlines()]
    assert [s["completion"] for s in samples] == [c[0]["content"] for c in call["completions"]]
    for name, scores in trl_scores_of(call).items():
        assert [s["rewards"][name] for s in samples] == pytest.approx(scores, abs=1e-6), name
    assert [s["extra"]["ids_length"] for s in samples] == [len(ids) for ids in call["completion_ids"]]
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["metrics"]["tuned"]["recorded_completions"] == len(samples)
    assert report["settings"]["trainer_state"] == {"global_step": 2, "max_steps": 2}


@pytest.mark.slow  # building the BPE model takes most of 10 s
def test_rewards_test_with_a_bpe_chat_model_gives_its_token_ids(cli, tmp_path, monkeypatch):
    """A tokenizer as users bring (byte-level BPE, ChatML, see tests/realistic_model.py): a token spans several
    characters, so `completion_ids` differ from the characters, and the length rewards see the token count."""
    from tests import realistic_model

    monkeypatch.setenv("COLUMNS", "400")
    built = realistic_model.build(tmp_path / "realistic")
    names = ["think_format_reward", "get_repetition_penalty_reward", "get_soft_overlong_punishment"]
    recipe = {
        "model": {"name_or_path": str(built.policy)},
        "dataset": {"source": str(built.train_data)},
        "rewards": [{"name": f"trl.rewards:{n}", "args": TRL_REWARDS[n]} for n in names],
        "trainer": {"num_generations": 2, "per_device_train_batch_size": 2},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    texts = ["<think>\nthe the the\n</think>\n#### 12", "#### 12", "the the the the the the"]
    result = cli(
        "rewards", "test", "--recipe", tmp_path / "recipe.yaml", *[a for t in texts for a in ("-c", t)]
    )
    assert result.exit_code == 0, result.output
    tokenizer = built.tokenizer()
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert [len(i) for i in ids] != [len(t) for t in texts]  # not one token per character
    rows = table_rows(result.stdout)
    for column, name in enumerate(names, start=1):
        expected = direct_scores(name, [chat(t) for t in texts], ["12"] * 3, ids)
        assert [number(r[column]) for r in rows] == pytest.approx(expected, abs=5e-6), name
    assert [number(r[1]) for r in rows] == [1.0, 0.0, 0.0]  # think_format_reward got chat messages
