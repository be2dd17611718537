"""The `judge` built-in reward against a stub OpenAI-compatible server on 127.0.0.1: exact scores, requests,
retries and cache hits under each fault (500s, 429 with Retry-After, a hang, malformed JSON, no score, a dropped
connection), the key kept out of everything, validate's checks and `rewards test`'s view of the verdicts."""

from __future__ import annotations

import time

import pytest

from grpo_cli import scoring
from grpo_cli.errors import UserError
from tests.helpers import bind, write
from tests.judge_stub import StubJudge

RUBRIC = "Question: {prompt}\nAnswer: {completion}"
KEY = "sk-judge-test-0123456789abcdef"


def judge_call(url: str, on_error: str = "skip", **args) -> scoring.RewardCall:
    args = {"base_url": url, "model": "stub", "rubric": RUBRIC, "backoff": 0.01, "timeout": 5, **args}
    return scoring.RewardCall(bind("judge", args=args, on_error=on_error))


def score(call: scoring.RewardCall, completions: list[str], **columns):
    log = scoring.RewardLog()
    kwargs = scoring.reward_kwargs(columns, scoring.text_ids(completions), log=log)
    scores, errors = call.score(["Q"] * len(completions), completions, kwargs)
    return scores, errors, log


def counts(call: scoring.RewardCall) -> dict:
    return call.fn.client.counts.as_dict()


def test_scores_map_the_range_onto_0_1_and_the_cache_saves_repeated_requests():
    with StubJudge() as stub:
        call = judge_call(stub.url)
        scores, errors, log = score(call, ["7", "3", "10", "7"])
        assert (scores, errors) == ([0.7, 0.3, 1.0, 0.7], 0)
        # Concurrent requests arrive in any order; the repeated "7" is asked once.
        assert sorted(stub.contents()) == [
            "Question: Q\nAnswer: 10",
            "Question: Q\nAnswer: 3",
            "Question: Q\nAnswer: 7",
        ]
        assert counts(call) == {"requests": 3, "retries": 0, "cache_hits": 1, "failures": 0}
        assert log.take_extra(4) == {
            "judge/verdict": ["7", "3", "10", "7"],
            "judge/details": ["Score: 7", "Score: 3", "Score: 10", "Score: 7"],
        }
        assert log.take_metrics()["judge/requests"] == 3.0
        assert score(call, ["3", "10"])[0] == [0.3, 1.0]  # the next step: both from the cache
        assert len(stub.requests) == 3
        assert counts(call)["cache_hits"] == 3
        body = stub.requests[0]["body"]
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("stub", 0.0, 256)
        assert "Authorization" not in stub.requests[0]["headers"]  # no api_key_env: no key sent


@pytest.mark.parametrize("fault", ["500", "502", "malformed", "drop"])
def test_a_fault_twice_is_retried_and_then_scored(fault):
    with StubJudge([fault, fault]) as stub:
        call = judge_call(stub.url, retries=3)
        assert score(call, ["4"])[:2] == ([0.4], 0)
        assert counts(call) == {"requests": 3, "retries": 2, "cache_hits": 0, "failures": 0}


def test_backoff_doubles_between_retries():
    with StubJudge(["500", "500", "500"]) as stub:
        call = judge_call(stub.url, retries=3, backoff=0.2)
        assert score(call, ["5"])[0] == [0.5]
        gaps = [b["time"] - a["time"] for a, b in zip(stub.requests, stub.requests[1:], strict=False)]
        assert len(gaps) == 3
        assert all(wait <= gap < wait + 0.3 for wait, gap in zip([0.2, 0.4, 0.8], gaps, strict=True)), gaps


def test_429_waits_as_retry_after_says():
    with StubJudge(["429"], retry_after="1") as stub:
        call = judge_call(stub.url, backoff=0.01)
        assert score(call, ["6"])[0] == [0.6]
        assert len(stub.requests) == 2
        assert 0.95 <= stub.requests[1]["time"] - stub.requests[0]["time"] < 1.5  # not the 0.01 s backoff


def test_a_hang_past_the_timeout_is_abandoned_and_retried():
    with StubJudge(["hang"], hang_s=3) as stub:
        call = judge_call(stub.url, timeout=0.5)
        started = time.monotonic()
        assert score(call, ["9"])[0] == [0.9]
        assert time.monotonic() - started < 2.5
        assert counts(call) == {"requests": 2, "retries": 1, "cache_hits": 0, "failures": 0}


def test_retries_used_up_go_to_on_error_per_completion():
    script = ["500"] * 3  # the first completion's three tries; the second is scored
    with StubJudge(script) as stub:
        call = judge_call(stub.url, retries=2, max_concurrency=1)
        scores, errors, log = score(call, ["1", "2"])
        assert (scores, errors) == ([None, 0.2], 1)
        assert counts(call) == {"requests": 4, "retries": 2, "cache_hits": 0, "failures": 1}
        assert log.take_extra(2)["judge/details"][0].startswith("(no reply: HTTP 500 from http://127.0.0.1:")
        assert call.tally.first_error.endswith("/v1/chat/completions after 2 retries")
    with StubJudge(script) as stub:
        assert score(judge_call(stub.url, "zero", retries=2, max_concurrency=1), ["1", "2"])[0] == [0.0, 0.2]
    with StubJudge(script) as stub, pytest.raises(scoring.RewardError, match="HTTP 500") as raised:
        score(judge_call(stub.url, "fail", retries=2, max_concurrency=1), ["1", "2"])
    assert "returned an error for this completion: JudgeError: HTTP 500" in str(raised.value)
    assert "completion: '1'" in str(raised.value)


def test_a_client_error_is_not_retried():
    with StubJudge(["401"]) as stub:
        call = judge_call(stub.url, retries=3)
        assert score(call, ["1"])[:2] == ([None], 1)
        assert len(stub.requests) == 1
        assert "HTTP 401" in call.tally.first_error and "stub says no" in call.tally.first_error


def test_a_reply_without_a_score_is_none_zero_or_an_error_as_unparsed_says():
    def reply(message):
        return "I cannot judge this." if message.endswith("?") else "8"

    with StubJudge(reply=reply) as stub:
        assert score(judge_call(stub.url), ["?", "x"])[:2] == ([None, 0.8], 0)
        assert score(judge_call(stub.url, unparsed="zero"), ["?"])[:2] == ([0.0], 0)
        call = judge_call(stub.url, "skip", unparsed="error")
        assert score(call, ["?"])[:2] == ([None], 1)
        assert call.tally.first_error == (
            "returned an error for this completion: JudgeError: no score in the reply 'I cannot judge this.'"
        )
        out_of_range = judge_call(stub.url, score_range=[1, 5])
        assert score(out_of_range, ["x"])[0] == [None]  # 8 is not on a 1-5 scale


def test_yes_no_and_a_json_field():
    replies = {
        "a": "Yes. It is right.",
        "b": "No, wrong.",
        "c": 'Sure: ```json\n{"ok": true, "score": 3}\n```',
    }
    with StubJudge(reply=lambda m: replies[m[-1]]) as stub:
        assert score(judge_call(stub.url, score_format="yes_no"), ["a", "b"])[0] == [1.0, 0.0]
        assert score(judge_call(stub.url, score_format="yes_no", json_field="ok"), ["c"])[0] == [1.0]
        assert score(judge_call(stub.url, json_field="score", score_range=[0, 4]), ["c"])[0] == [0.75]


def test_the_rubric_reads_row_columns_and_chat_messages():
    with StubJudge(reply=lambda m: "5") as stub:
        call = judge_call(stub.url, rubric="{prompt} | {completion} | ref={answer} {{braces}}")
        prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]]
        completions = [[{"role": "assistant", "content": "5"}]]
        kwargs = scoring.reward_kwargs({"answer": ["5"]}, [[1]])
        assert call.score(prompts, completions, kwargs)[0] == [0.5]
        assert stub.contents() == ["system: Be brief.\n\nuser: 2+3? | 5 | ref=5 {braces}"]


def test_the_key_is_read_from_its_variable_at_each_request(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    with StubJudge() as stub:
        call = judge_call(stub.url, api_key_env="JUDGE_TEST_KEY")
        score(call, ["1"])
        monkeypatch.setenv("JUDGE_TEST_KEY", "rotated")
        score(call, ["2"])
        assert [r["headers"]["Authorization"] for r in stub.requests] == [f"Bearer {KEY}", "Bearer rotated"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"rubric": None}, "exactly one of `rubric` (inline) or `rubric_file`"),
        ({"rubric": "Rate {prompt}"}, "never shows the judge the completion"),
        ({"rubric": "{completion} {x.y}"}, "rubric field {x.y}: write plain names"),
        ({"rubric": "{completion} {"}, "not a valid template"),
        ({"score_range": [10, 0]}, "low < high"),
        ({"score_format": "stars"}, "score_format must be 'number' or 'yes_no'"),
        ({"base_url": "localhost:8000"}, "base_url must be an http(s) URL"),
        ({"retries": -1}, "retries must be a whole number >= 0"),
        ({"unparsed": "maybe"}, "unparsed must be one of none, zero, error"),
        ({"rubric": None, "rubric_file": "/nonexistent/rubric.txt"}, "cannot read rubric_file"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(UserError, match="judge") as raised:
        judge_call("http://127.0.0.1:9/v1", **args)
    assert message in str(raised.value)


def test_a_key_pasted_as_api_key_env_is_refused_without_being_echoed():
    with pytest.raises(UserError) as raised:
        judge_call("http://127.0.0.1:9/v1", api_key_env=KEY)
    assert "NAME of the environment variable" in str(raised.value)
    assert KEY not in str(raised.value)


def judge_recipe(tmp_path, tiny_recipe, url: str, **args) -> str:
    rewards = [{"name": "judge", "args": {"base_url": url, "model": "stub", "rubric": RUBRIC, **args}}]
    return tiny_recipe({"rewards": rewards})


def test_validate_checks_the_rubric_columns_and_warns_of_an_unset_key(
    cli, tmp_path, tiny_recipe, monkeypatch
):
    monkeypatch.delenv("JUDGE_UNSET_KEY", raising=False)
    good = judge_recipe(tmp_path, tiny_recipe, "http://127.0.0.1:9/v1", api_key_env="JUDGE_UNSET_KEY")
    result = cli("validate", good)
    assert result.exit_code == 0, result.output
    assert (
        "warning: judge: the environment variable JUDGE_UNSET_KEY (api_key_env) is not set" in result.stderr
    )
    bad = judge_recipe(tmp_path, tiny_recipe, "http://127.0.0.1:9/v1", rubric="{completion} vs {solution}")
    result = cli("validate", bad)
    assert result.exit_code == 2
    assert "rewards[0] (judge) reads column 'solution', which the dataset does not have" in result.stderr


def test_a_rubric_file_resolves_against_the_recipe(cli, tmp_path, tiny_recipe):
    write(tmp_path / "rubrics" / "judge.txt", "Rate {completion} against {solution}.")
    args = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "rubric_file": "rubrics/judge.txt"}
    recipe = tiny_recipe({"rewards": [{"name": "judge", "args": args}]})
    result = cli("validate", recipe)  # run from elsewhere: the file is found next to the recipe
    assert result.exit_code == 2
    assert "rewards[0] (judge) reads column 'solution'" in result.stderr
    (tmp_path / "rubrics" / "judge.txt").unlink()
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert (
        f"judge: cannot read rubric_file {tmp_path / 'rubrics' / 'judge.txt'}: No such file" in result.stderr
    )


def test_rewards_test_shows_each_reply_and_value(cli, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    with StubJudge(reply=lambda m: "8, well argued" if m.endswith("a") else "no idea") as stub:
        args = [
            f"base_url={stub.url}",
            "model=stub",
            "rubric='Is this right? Answer: {completion}'",
            "api_key_env=JUDGE_TEST_KEY",
        ]
        result = cli(
            "rewards", "test", "-r", "judge", *[x for a in args for x in ("--arg", a)], "-c", "a", "-c", "b"
        )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in line.split("│")[1:-1]] for line in lines] == [
        ["'a'", "0.8", "0.8", "+0.000", "8", "8, well argued"],
        ["'b'", "None", "None", "+0.000", "no score", "no idea"],
    ]
    assert "judge/verdict" in result.stdout and "judge/details" in result.stdout
    assert KEY not in result.output
