"""Calling rewards (grpo_cli.scoring): run-time checks, on_error, timeouts, SystemExit, pickling, reward models
scored the same in train, eval and `rewards test`, weighted totals and GRPO's advantages."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pickle
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grpo_cli import grpo_advantages, reward_binding, reward_models, scoring
from grpo_cli.grpo_advantages import advantages
from grpo_cli.recipe import RewardEntry
from tests.helpers import bind, call, write

# ---- mistakes at run time -----------------------------------------------------------------------------

FLAKY = """
import math
import time


def wrong_count(completions, **kwargs):
    return [1.0] * (len(completions) + 1)


def not_a_list(completions, **kwargs):
    return 1.0


def word(completions, **kwargs):
    return [0.5 if c != "bad" else "high" for c in completions]


def nan(completions, **kwargs):
    return [math.nan if c == "bad" else 0.5 for c in completions]


def infinite(completions, **kwargs):
    return [math.inf if c == "bad" else 0.5 for c in completions]


def raises(completions, **kwargs):
    return [len(c) / (c != "bad") for c in completions]


def sleeps(completions, **kwargs):
    time.sleep(30 if "bad" in completions else 0)
    return [0.5] * len(completions)
"""
STUCK_S = 30  # how long `sleeps` is stuck on "bad": a timeout of 0.2 s must end the call long before

PROMPTS = ["What is 1 + 1?", "What is 2 + 2?"]
COMPLETIONS = ["ok", "bad"]
HINT = "  (set on_error: zero or skip on this reward to score such cases 0 or None and go on)"


@pytest.fixture
def flaky(tmp_path):
    return write(tmp_path / "flaky.py", FLAKY)


@pytest.mark.parametrize(
    ("attr", "problem", "offender"),
    [
        ("wrong_count", "returned 3 values for 2 completions", 0),
        ("not_a_list", "returned a float, not a list with one score per completion (2)", 0),
        ("word", "returned a non-number 'high'", 1),
        ("nan", "returned NaN", 1),
        ("infinite", "returned an infinite score inf", 1),
        ("raises", "raised ZeroDivisionError: division by zero at {flaky}:26", 1),
        ("sleeps", "ran over its timeout of 0.2 s", 0),
    ],
)
def test_a_bad_result_stops_the_run_naming_reward_prompt_and_completion(flaky, attr, problem, offender):
    started = time.perf_counter()
    with pytest.raises(scoring.RewardError) as info:
        call(f"{flaky}:{attr}", COMPLETIONS, PROMPTS, timeout=0.2 if attr == "sleeps" else None)
    seconds = time.perf_counter() - started
    batch = " (the first of a batch of 2)" if offender == 0 and attr != "raises" else ""
    assert str(info.value).splitlines() == [
        f"reward {attr!r} {problem.format(flaky=flaky)}",
        f"  prompt: {PROMPTS[offender]!r}",
        f"  completion: {COMPLETIONS[offender]!r}{batch}",
        HINT,
    ]
    assert seconds < STUCK_S / 2  # not the stuck call's time: 75 times the timeout, for a loaded machine


@pytest.mark.parametrize("attr", ["wrong_count", "not_a_list", "word", "nan", "infinite", "raises", "sleeps"])
@pytest.mark.parametrize(("on_error", "value"), [("zero", 0.0), ("skip", None)])
def test_on_error_scores_zero_or_none_and_counts_the_errors(flaky, attr, on_error, value):
    timeout = 0.2 if attr == "sleeps" else None
    scores, errors = call(f"{flaky}:{attr}", COMPLETIONS, PROMPTS, on_error=on_error, timeout=timeout)
    whole_batch = attr in ("wrong_count", "not_a_list", "raises", "sleeps")
    assert scores == ([value, value] if whole_batch else [0.5, value])
    assert errors == (2 if whole_batch else 1)


def test_the_call_logs_time_and_error_count_through_trl(flaky):
    reward = scoring.RewardCall(bind(f"{flaky}:nan", on_error="skip"))
    logged = {}
    started = time.perf_counter()
    scores = reward(PROMPTS, COMPLETIONS, completion_ids=[[1], [2]], log_metric=logged.__setitem__)
    spent = time.perf_counter() - started
    assert scores == [0.5, None]
    assert reward.__name__ == "nan"  # TRL names the reward's metrics after it: rewards/nan/mean
    assert sorted(logged) == ["rewards/nan/errors", "rewards/nan/seconds"]
    assert logged["rewards/nan/errors"] == 1.0
    assert 0 <= logged["rewards/nan/seconds"] <= spent  # the call's own time, measured beside it


def test_arguments_from_the_recipe_win_over_a_column_of_the_same_name(tmp_path):
    path = write(
        tmp_path / "ref.py",
        "def same(completions, answer, **kw):\n    return [float(c == answer) for c in completions]\n",
    )
    assert call(f"{path}:same", ["5", "6"], args={"answer": "6"}, columns={"answer": ["5", "5"]}) == (
        [0.0, 1.0],
        0,
    )


def test_a_reward_that_never_returns_does_not_keep_the_process_alive(tmp_path):
    stuck = write(
        tmp_path / "stuck.py",
        f"""
        import time
        from pathlib import Path


        def stuck(completions, **kwargs):
            time.sleep({STUCK_S})
            Path(__file__).with_name("woke").touch()  # only a process that waited for the call gets here
            return [0.5] * len(completions)
        """,
    )
    code = textwrap.dedent(f"""
        from grpo_cli import reward_binding, scoring
        from grpo_cli.recipe import RewardEntry
        entry = RewardEntry(name={str(stuck) + ":stuck"!r}, timeout=0.1, on_error="zero")
        print(scoring.RewardCall(reward_binding.bind(entry, "r")).score(["p"], ["bad"], {{}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout == "([0.0], 1)\n", result.stderr
    assert not (tmp_path / "woke").exists(), "the process waited for the stuck call to end"


# ---- pickling -----------------------------------------------------------------------------------------


KINDS = '''
import threading


def brevity(completions, limit=3, **kwargs):
    return [float(len(c) <= limit) for c in completions]


class Locked:
    """Holds what does not pickle."""

    def __init__(self, limit=3):
        self.lock = threading.Lock()
        self.limit = limit

    def __call__(self, prompts, completions, **kwargs):
        with self.lock:
            return [float(len(c) <= self.limit) for c in completions]
'''


@pytest.mark.parametrize(
    "name",
    ["builtin", "file", "file class", "module", "timed file"],
)
def test_reward_calls_pickle_and_still_score(name, tmp_path, monkeypatch):
    path = write(tmp_path / "kinds_mod.py", KINDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = {
        "builtin": RewardEntry(name="length", args={"target": 3}),
        "file": RewardEntry(name=f"{path}:brevity", args={"limit": 2}),
        "file class": RewardEntry(name=f"{path}:Locked", args={"limit": 2}),
        "module": RewardEntry(name="kinds_mod:brevity", args={"limit": 2}),
        "timed file": RewardEntry(name=f"{path}:brevity", args={"limit": 2}, timeout=5, on_error="zero"),
    }[name]
    reward = scoring.RewardCall(reward_binding.bind(entry, "rewards[0]"))
    before = reward(["Q"] * 2, ["ab", "abcdef"], log_metric=lambda *a: None)  # a timed call ran its thread
    copy = pickle.loads(pickle.dumps(reward))
    assert copy is not reward and copy.__name__ == reward.__name__
    assert (copy.on_error, copy.timeout) == (entry.on_error, entry.timeout)
    assert copy(["Q"] * 2, ["ab", "abcdef"]) == before
    assert before == ([1.0, 0.0] if name != "builtin" else [pytest.approx(2 / 3), 0.0])
    sys.modules.pop("kinds_mod", None)


def test_unpickling_many_rewards_reads_entry_points_at_most_once(tmp_path, monkeypatch):
    # What a worker process does for each reward it is sent: no scan of every installed distribution per reward.
    import importlib.metadata

    from grpo_cli import registry

    path = write(tmp_path / "kinds.py", KINDS)
    names = ["length", "accuracy", f"{path}:brevity", f"{path}:Locked", "length"]
    args = [{"target": 3}, {}, {"limit": 2}, {"limit": 2}, {"max_length": 5}]
    pickled = [pickle.dumps(scoring.RewardCall(bind(n, args=a))) for n, a in zip(names, args, strict=True)]
    scans, real = [], importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **k: scans.append(k) or real(**k))
    registry.clear_caches()
    copies = [pickle.loads(p) for p in pickled]
    assert [c.__name__ for c in copies] == ["length", "accuracy", "brevity", "Locked", "length"]
    assert scans == [{"group": reward_binding.ENTRY_POINT_GROUP}]
    registry.clear_caches()
    for built_in in ("length", "accuracy"):
        pickle.loads(pickled[names.index(built_in)])
    assert len(scans) == 1  # a built-in resolves without reading them


def test_a_file_reward_unpickles_in_another_process(tmp_path):
    path = write(tmp_path / "kinds.py", KINDS)
    reward = scoring.RewardCall(bind(f"{path}:brevity", args={"limit": 2}))
    code = "import pickle, sys\nprint(pickle.loads(sys.stdin.buffer.read()).score(['Q'], ['ab', 'abc'], {}))"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(reward),
        capture_output=True,
        cwd=elsewhere,
        timeout=60,
    )
    assert result.stdout.decode() == "([1.0, 0.0], 0)\n", result.stderr.decode()


def test_a_call_around_a_reward_model_pickles_as_it_is():
    """The PPO bridge wraps a reward model in a scorer of its own; there is no recipe entry to bind again."""

    bound = dataclasses.replace(bind("model:acme/rm"), fn=functools.partial(sorted, reverse=True))
    copy = pickle.loads(pickle.dumps(scoring.RewardCall(bound)))
    assert (copy.__name__, copy.fn([1, 3, 2])) == ("rm", [3, 2, 1])


def test_file_functions_pickle_by_reference_in_process(tmp_path):
    bound = bind(f"{write(tmp_path / 'kinds.py', KINDS)}:brevity")
    assert pickle.loads(pickle.dumps(bound.fn)) is bound.fn


# ---- a real run: per-reward metrics and errors in metrics.jsonl ---------------------------------------

RUN_REWARDS = '''
import math
import time


def half_nan(completions, **kwargs):
    """NaN for the first completion of each batch, 1.0 for the rest."""
    return [math.nan] + [1.0] * (len(completions) - 1)


def slow(completions, **kwargs):
    time.sleep(0.5)
    return [1.0] * len(completions)


def miscount(completions, **kwargs):
    return [1.0]
'''


def train_two_steps(cli, tiny_recipe, rewards: list[dict], tmp_path: Path) -> list[dict]:
    """Train the tiny GRPO recipe with `rewards` for two steps; metrics.jsonl's rows."""
    path = tiny_recipe({"rewards": rewards, "trainer": {"max_steps": 2, "save_steps": 100}})
    result = cli("train", path)
    assert result.exit_code == 0, result.output
    rows = [
        json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2]
    return rows


@pytest.mark.slow
def test_training_logs_each_rewards_mean_time_and_errors(cli, tiny_recipe, tmp_path):
    write(tmp_path / "run_rewards.py", RUN_REWARDS)
    rewards = [
        {"name": "./run_rewards.py:half_nan", "on_error": "skip"},
        {"name": "./run_rewards.py:slow", "on_error": "zero", "timeout": 0.05},
    ]
    rows = train_two_steps(cli, tiny_recipe, rewards, tmp_path)
    for row in rows:  # 8 completions a step: one NaN skipped; every slow call ran over its timeout
        assert (row["rewards/half_nan"], row["rewards/half_nan/errors"]) == (1.0, 1.0)
        assert (row["rewards/slow"], row["rewards/slow/errors"]) == (0.0, 8.0)
        assert 0 <= row["rewards/half_nan/seconds"] < 0.05
        assert 0.05 <= row["rewards/slow/seconds"] < 0.4


@pytest.mark.slow
def test_training_stops_on_a_bad_reward_with_its_message(cli, tiny_recipe, tmp_path):
    write(tmp_path / "run_rewards.py", RUN_REWARDS)
    path = tiny_recipe({"rewards": [{"name": "./run_rewards.py:miscount"}], "trainer": {"max_steps": 2}})
    result = cli("train", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    lines = lines[lines.index("error: reward 'miscount' returned 1 value for 8 completions") :]
    assert re.fullmatch(r"  prompt: '\d\+\d='", lines[1]), lines[1]  # the addition task's prompts
    assert re.fullmatch(r"  completion: '.*' \(the first of a batch of 8\)", lines[2]), lines[2]
    assert lines[3:] == [HINT]


# ---- the advantage arithmetic itself ----


def test_advantages_follow_trl():
    assert advantages([[[1.0, 0.0, 2.0]]], [1.0]) == [
        [0.0, pytest.approx(-1 / 1.0001), pytest.approx(1 / 1.0001)]
    ]
    assert advantages([[[1.0, 0.0, 2.0]]], [1.0], "none") == [[0.0, -1.0, 1.0]]
    assert advantages([[[3.0]]], [1.0]) == [[0.0]]  # a group of one has no std
    assert advantages([[[1.0, 1.0]]], [1.0]) == [[0.0, 0.0]]  # std 0: divided by 1e-4, still 0
    # normalize_then_sum: each reward normalised in its group (1, 0, 1, 0 -> +-a; 2, 2, 2 -> 0), weighted and
    # summed, then normalised over the batch (+-a -> +-a / (std of +-a, a * sqrt(4/3), + 1e-4)).
    table = [[1.0, 0.0, 1.0, 0.0], [2.0, 2.0, 2.0, None]]
    a = 0.5 / ((1 / 3) ** 0.5 + 1e-4)
    expected = a / (a * (4 / 3) ** 0.5 + 1e-4)
    got = advantages([table], [1.0, 1.0], aggregation="normalize_then_sum")
    assert got == [pytest.approx([expected, -expected, expected, -expected])]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scale", "aggregation"),
    [
        ("group", "sum_then_normalize"),
        ("batch", "sum_then_normalize"),
        ("none", "sum_then_normalize"),
        ("group", "normalize_then_sum"),
    ],
)
def test_advantages_equal_trls_own_arithmetic(scale, aggregation):
    """The same numbers as GRPOTrainer's code (copied from TRL 1.12), on two groups of four with None scores."""
    import torch
    from trl.trainer.utils import nanstd

    nan = float("nan")
    scores = torch.tensor([[1, 2], [0, 2], [1, 2], [0, nan], [3, 1], [1, nan], [nan, nan], [2, 2]])
    weights, generations = torch.tensor([1.0, 0.5]), 4
    unscorable = torch.isnan(scores).all(dim=1)
    if aggregation == "sum_then_normalize":
        rewards = (scores * weights).nansum(dim=1)
        rewards[unscorable] = nan
        mean = torch.nanmean(rewards.view(-1, generations), dim=1).repeat_interleave(generations)
        std = nanstd(rewards.view(-1, generations), dim=1).repeat_interleave(generations)
        std = nanstd(rewards).expand_as(rewards) if scale == "batch" else std
        expected = rewards - mean if scale == "none" else (rewards - mean) / (std + 1e-4)
    else:
        grouped = scores.view(-1, generations, 2)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        normalised = ((grouped - mean_k) / (nanstd(grouped, dim=1, keepdim=True) + 1e-4)).view(-1, 2)
        rewards = (normalised * weights).nansum(dim=1)
        rewards[unscorable] = nan
        expected = (rewards - torch.nanmean(rewards)) / (nanstd(rewards) + 1e-4)
    expected = torch.nan_to_num(expected, nan=0.0).tolist()

    def score(value):
        return None if math.isnan(value) else value

    tables = [[[score(scores[g * 4 + i, k].item()) for i in range(4)] for k in range(2)] for g in range(2)]
    got = advantages(tables, weights.tolist(), scale, aggregation)
    assert got[0] + got[1] == pytest.approx(expected, abs=1e-5)


def test_the_readmes_worked_example():
    """Rewards 1, 0, 2 in one group: mean 1, so advantages 0, -1, +1 before dividing by the std (1)."""
    assert advantages([[[1.0, 0.0, 2.0]]], [1.0], "none") == [[0.0, -1.0, 1.0]]
    assert advantages([[[1.0, 0.0, 2.0]]], [1.0], "group") == [[0.0, -1 / 1.0001, 1 / 1.0001]]


def test_scale_mode_reads_trls_spellings():
    assert [grpo_advantages.scale_mode(v) for v in (True, False, "group", "batch", "none")] == [
        "group",
        "none",
        "group",
        "batch",
        "none",
    ]
    with pytest.raises(scoring.UserError, match="trainer.scale_rewards: 'std' is not group, batch or none"):
        grpo_advantages.scale_mode("std")


def test_weighted_total_skips_none_as_trls_nansum():
    rewards = [bind("accuracy", weight=2.0), bind("closeness", weight=0.5)]
    assert scoring.weighted_total(rewards, [[1.0, None, None], [0.5, 1.0, None]]) == [2.25, 0.5, 0]


# ---- SystemExit inside a reward ----

EXITS = """
import sys


def exits(completions, **kwargs):
    if "bad" in completions:
        sys.exit(3)
    return [0.5] * len(completions)
"""


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["in the caller's thread", "in a timed thread"])
def test_a_reward_that_calls_sys_exit_is_a_reward_error(tmp_path, timeout):
    path = write(tmp_path / "exits.py", EXITS)
    with pytest.raises(scoring.RewardError) as info:
        call(f"{path}:exits", ["ok", "bad"], ["p1", "p2"], timeout=timeout)
    assert str(info.value).splitlines()[:3] == [
        f"reward 'exits' raised SystemExit: 3 at {path}:6",
        "  prompt: 'p2'",
        "  completion: 'bad'",
    ]
    assert call(f"{path}:exits", ["ok", "bad"], on_error="zero", timeout=timeout) == ([0.0, 0.0], 2)
    assert call(f"{path}:exits", ["ok", "bad"], on_error="skip", timeout=timeout) == ([None, None], 2)


def test_rewards_test_reports_a_reward_that_calls_sys_exit_and_exits_2(cli, tmp_path):
    path = write(tmp_path / "exits.py", EXITS)
    result = cli("rewards", "test", "-r", f"{path}:exits", "-c", "bad")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"error: reward 'exits' raised SystemExit: 3 at {path}:6"


# ---- reward models ----


def direct_scores(model_dir: Path, texts: list[str]) -> list[float]:
    """The reward model's logit for each text, computed one at a time without grpo-cli."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]


def test_reward_model_score_is_the_models_logit_on_prompt_plus_completion(reward_model_dir):
    import torch

    score = reward_models.RewardModelScore(str(reward_model_dir), torch.float32)
    got = score(["1+2=", "9+9="], ["3", "18"])
    assert got == pytest.approx(direct_scores(reward_model_dir, ["1+2=3", "9+9=18"]), abs=1e-5)
    assert score([], []) == []


def test_reward_model_reads_chat_through_its_own_chat_template(reward_model_dir):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}={% endfor %}"
    tokenizer.save_pretrained(reward_model_dir)
    score = reward_models.RewardModelScore(str(reward_model_dir), torch.float32)
    prompts = [[{"role": "user", "content": "1+2"}], [{"role": "user", "content": "9+9"}]]
    completions = [[{"role": "assistant", "content": "3"}], [{"role": "assistant", "content": "18"}]]
    assert score.texts(prompts, completions) == ["1+2=3=", "9+9=18="]
    assert score(prompts, completions) == pytest.approx(
        direct_scores(reward_model_dir, ["1+2=3=", "9+9=18="]), abs=1e-5
    )


# What GRPO's chat_template_kwargs can change in a reward model's text. Qwen3's template reads enable_thinking only
# for the generation prompt, which a reward model never reads; SmolLM3's writes the reasoning mode into the system
# turn of every conversation.
ONLY_GENERATION_PROMPT = (
    "{% for m in messages %}{{ m['content'] }}={% endfor %}"
    "{% if add_generation_prompt %}{% if enable_thinking is false %}0{% endif %}{% endif %}"
)
SYSTEM_TURN = (
    "{{ '0' if enable_thinking is false else '1' }}+{% for m in messages %}{{ m['content'] }}={% endfor %}"
)


@pytest.mark.parametrize(
    "template, trained_by_a_reward_run, said",
    [(SYSTEM_TURN, True, True), (ONLY_GENERATION_PROMPT, True, False), (SYSTEM_TURN, False, False)],
    ids=["changes-the-text", "generation-prompt-only", "not-a-reward-run"],
)
def test_a_reward_run_scored_with_kwargs_that_change_its_text_is_said_once(
    reward_model_dir, monkeypatch, capsys, template, trained_by_a_reward_run, said
):
    """A reward run renders its pairs without chat_template_kwargs (RewardConfig has none); GRPO scores with its
    own, as TRL does. When they change what the reward model reads, that is said, once; a model not trained by a
    reward run is scored as TRL scores it, without comment."""
    import torch
    from transformers import AutoTokenizer

    from grpo_cli import output

    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(reward_model_dir)
    if trained_by_a_reward_run:
        (reward_model_dir / "recipe.yaml").write_text("algorithm: reward\n")
    monkeypatch.setattr(output, "_warned", set())
    kwargs = {"enable_thinking": False}
    score = reward_models.RewardModelScore(str(reward_model_dir), torch.float32, "cpu", kwargs)
    prompts, completions = [[{"role": "user", "content": "1+2"}]], [[{"role": "assistant", "content": "3"}]]
    score(prompts, completions)
    score(prompts, completions)
    expected = "0+1+2=3=" if template == SYSTEM_TURN else "1+2=3="
    assert score.texts(prompts, completions) == [
        expected
    ]  # scored with the kwargs, as TRL's GRPOTrainer does
    warning = (
        f"warning: reward model {reward_model_dir}: trainer.chat_template_kwargs {kwargs} change what its chat "
        "template renders, but its reward run rendered its pairs without them, so it scores text unlike what it "
        "was trained on\n"
    )
    assert capsys.readouterr().err == (warning if said else "")


def test_a_reward_model_goes_through_reward_call_like_a_function(reward_model_dir):
    (loaded,) = reward_models.load_reward_models(
        [bind(f"model:{reward_model_dir}", on_error="skip")], "float32"
    )
    assert isinstance(loaded.fn, reward_models.RewardModelScore) and loaded.name == "judge"
    logged = {}
    scores = scoring.RewardCall(loaded)(["1+2="], ["3"], log_metric=logged.__setitem__)
    assert scores == pytest.approx(direct_scores(reward_model_dir, ["1+2=3"]), abs=1e-5)
    assert sorted(logged) == ["rewards/judge/errors", "rewards/judge/seconds"]
    assert logged["rewards/judge/errors"] == 0.0


def test_an_unloadable_reward_model_is_one_line(cli, tmp_path):
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text("{}")
    result = cli("rewards", "test", "-r", f"model:{tmp_path / 'rm'}", "-c", "5")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot load ")
    assert len(result.stderr.splitlines()) == 1


def table_rows(output: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")
    ]


def test_rewards_test_scores_a_reward_model_as_calling_it_directly(cli, reward_model_dir):
    result = cli(
        "rewards", "test", "-r", f"model:{reward_model_dir}", "--prompt", "1+2=", "-c", "3", "-c", "18"
    )
    assert result.exit_code == 0, result.output
    expected = direct_scores(reward_model_dir, ["1+2=3", "1+2=18"])
    assert [row[:2] for row in table_rows(result.stdout)] == [
        ["'3'", f"{expected[0]:g}"],
        ["'18'", f"{expected[1]:g}"],
    ]


def test_eval_scores_a_reward_model_as_calling_it_directly(cli, tiny_recipe, reward_model_dir, tmp_path):
    path = tiny_recipe(
        {"rewards": [{"name": "accuracy"}, {"name": f"model:{reward_model_dir}", "weight": 0.5}]}
    )
    result = cli("eval", path, "--limit", "3", "--output", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    samples = [
        json.loads(line) for line in (tmp_path / "eval" / "eval_samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 3
    expected = direct_scores(reward_model_dir, [s["prompt"] + s["completion"] for s in samples])
    assert [s["rewards"]["judge"] for s in samples] == pytest.approx(expected, abs=1e-5)
    assert [s["reward"] for s in samples] == pytest.approx(
        [s["rewards"]["accuracy"] + 0.5 * s["rewards"]["judge"] for s in samples], abs=1e-6
    )
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["metrics"]["base"]["rewards/judge"] == pytest.approx(sum(expected) / 3, abs=1e-5)


@pytest.mark.slow
def test_grpo_logs_errors_and_seconds_for_a_reward_model(cli, tiny_recipe, reward_model_dir, tmp_path):
    rewards = [{"name": "accuracy"}, {"name": f"model:{reward_model_dir}", "weight": 0.5}]
    rows = train_two_steps(cli, tiny_recipe, rewards, tmp_path)
    for row in rows:
        assert row["rewards/judge/errors"] == 0.0 and row["rewards/accuracy/errors"] == 0.0
        assert 0 < row["rewards/judge/seconds"] < 5 and 0 <= row["rewards/accuracy/seconds"] < 5
        assert row["reward"] == pytest.approx(row["rewards/accuracy"] + 0.5 * row["rewards/judge"], abs=1e-5)


@pytest.mark.slow
def test_a_reward_calling_sys_exit_in_training_follows_on_error(cli, tiny_recipe, tmp_path):
    """It used to end the run silently with the reward's exit code (issue 10)."""
    write(tmp_path / "quits.py", "import sys\n\n\ndef quits(completions, **kwargs):\n    sys.exit(3)\n")
    rows = train_two_steps(
        cli, tiny_recipe, [{"name": "accuracy"}, {"name": "./quits.py:quits", "on_error": "zero"}], tmp_path
    )
    assert [(row["rewards/quits"], row["rewards/quits/errors"]) for row in rows] == [(0.0, 8.0), (0.0, 8.0)]
    path = tiny_recipe({"rewards": [{"name": "./quits.py:quits"}]}, name="fails.yaml")
    result = cli("train", path)
    assert result.exit_code == 2, result.output
    assert (
        f"error: reward 'quits' raised SystemExit: 3 at {tmp_path / 'quits.py'}:5"
        in result.stderr.splitlines()
    )


def test_a_reward_that_rewrites_its_batch_in_place_changes_nothing_for_the_next(cli, tmp_path):
    """Issue 23 item 13: `completions[:] = ...` in one reward scored the next one's view (accuracy 1.0 for wrong
    answers); item 14: one that empties its lists crashed the run under on_error: zero. Each gets its own copy."""
    recipe = tmp_path / "r.yaml"
    write(
        tmp_path / "meddle.py",
        """
        def rewrite(completions, answer, **kw):
            completions[:] = list(answer)  # every completion "becomes" the right answer
            return [0.0] * len(answer)

        def empty(completions, prompts, answer, **kw):
            scores = [1.0] * len(completions)
            completions.clear(), prompts.clear(), answer.clear()
            return scores
        """,
    )
    recipe.write_text(
        "model: {from_config: {vocabulary: '0123456789+='}}\n"
        "dataset: {generate: {task: addition}, prompt: '{question}'}\n"
        "rewards:\n"
        "  - {name: ./meddle.py:rewrite}\n  - {name: ./meddle.py:empty, on_error: zero}\n  - {name: accuracy}\n"
    )
    from grpo_cli import tasks

    row = tasks.TASKS["addition"](size=1, seed=0)[0]
    result = cli("rewards", "test", "--recipe", recipe, "--row", "0", "-c", "nonsense", "-c", row["answer"])
    assert result.exit_code == 0, result.output
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line
    ]
    # accuracy, the last reward, still sees the completions as written: only the right one scores
    assert [(c[0], c[3]) for c in cells] == [("'nonsense'", "0"), (repr(row["answer"]), "1")], result.stdout


@pytest.mark.parametrize("timeout", [None, 5])
def test_an_async_reward_is_awaited(tmp_path, timeout):
    """Issue 23 item 5: validate passed an `async def` reward and train refused it. It is scored as TRL would: its
    coroutine awaited (a judge gathers its own calls inside)."""
    write(
        tmp_path / "judge.py",
        """
        import asyncio

        async def judge(completions, **kw):
            async def one(c):
                await asyncio.sleep(0)
                return float(len(c))
            return list(await asyncio.gather(*(one(c) for c in completions)))
        """,
    )
    fields = {"timeout": timeout} if timeout else {}
    assert call(f"{tmp_path}/judge.py:judge", ["a", "abc"], **fields) == ([1.0, 3.0], 0)


def test_rewards_test_scores_an_async_reward(cli, tmp_path):
    write(tmp_path / "judge.py", "async def judge(completions, **kw):\n    return [0.5] * len(completions)\n")
    result = cli("rewards", "test", "-r", f"{tmp_path}/judge.py:judge", "-p", "Q", "-c", "x", "-c", "y")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("0.5") >= 2
