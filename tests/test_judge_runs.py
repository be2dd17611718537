"""The judge reward in real runs: a GRPO run judged by the stub server (the key never written anywhere), and the
judge against a real local OpenAI-compatible server, `transformers serve`, serving a tiny model built here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_RECIPE
from tests.judge_stub import StubJudge

pytestmark = pytest.mark.slow

KEY = "sk-judge-run-fedcba9876543210"
RUBRIC = "Problem: {question}\nReference: {answer}\nAnswer: {completion}\nScore 0-10:"


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def train(tmp_path: Path, judge_args: dict, **env: str) -> subprocess.CompletedProcess:
    recipe = {
        **TINY_RECIPE,
        "output_dir": str(tmp_path / "run"),
        "rewards": [{"name": "judge", "args": judge_args}],
        "trainer": {**TINY_RECIPE["trainer"], "max_steps": 2, "save_steps": 2},
    }
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(recipe))
    return subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", "judge.yaml"],
        cwd=tmp_path,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def metric_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def files_holding(directory: Path, text: str) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_grpo_trains_judged_by_the_stub_and_the_key_is_never_written(tmp_path):
    def reply(message: str) -> str:  # a judge that likes short answers: 10 - length, on a 0-10 scale
        return f"Score: {max(0, 10 - len(message.rsplit('Answer: ', 1)[-1].split(chr(10))[0]))}"

    with StubJudge(["500", "429"], retry_after="0", reply=reply) as stub:
        args = {"base_url": stub.url, "model": "stub", "rubric": RUBRIC, "api_key_env": "JUDGE_RUN_KEY"}
        done = train(tmp_path, {**args, "backoff": 0.01}, JUDGE_RUN_KEY=KEY)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [r for r in metric_rows(tmp_path / "run") if "rewards/judge" in r]
        assert [r["step"] for r in rows] == [1, 2]
        assert all(0.0 <= r["rewards/judge"] <= 1.0 for r in rows)
        contents = stub.contents()
        # 2 steps x 8 completions; the two faults retried; a text is never asked twice (the cache).
        distinct = set(contents)
        assert len(contents) == len(distinct) + 2 and len(distinct) <= 16
        assert {r["headers"]["Authorization"] for r in stub.requests} == {f"Bearer {KEY}"}
        assert all(c.startswith("Problem: ") and "\nReference: " in c for c in contents)
    assert files_holding(tmp_path, KEY) == []
    assert KEY not in done.stderr + done.stdout
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["rewards"][0]["args"]["api_key_env"] == "JUDGE_RUN_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """`transformers serve` on 127.0.0.1 serving a tiny randomly initialised chat model saved here: (url, model)."""
    pytest.importorskip("fastapi", reason='transformers serve needs pip install "transformers[serving]"')
    pytest.importorskip("uvicorn", reason='transformers serve needs pip install "transformers[serving]"')
    from tests import realistic_model

    directory = tmp_path_factory.mktemp("served") / "judge-model"
    tokenizer = realistic_model.build_tokenizer(0)
    realistic_model.build_policy(tokenizer, 0).save_pretrained(directory)
    realistic_model.save_tokenizer(tokenizer, directory)
    port = free_port()
    log = (directory.parent / "serve.log").open("w")
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; sys.exit(main())"
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(directory), *("--host", "127.0.0.1", "--port", str(port))],
        env=environment(TRANSFORMERS_OFFLINE="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (directory.parent / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not start within 180 s"
            time.sleep(0.5)
        yield url, str(directory)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_the_judge_against_transformers_serve(served_model):
    from grpo_cli import scoring
    from tests.helpers import bind

    url, model = served_model
    args = {"base_url": url, "model": model, "rubric": RUBRIC, "max_tokens": 8, "temperature": 1.0}
    call = scoring.RewardCall(
        bind("judge", args=args)
    )  # on_error: fail, so any failed request fails the test
    log = scoring.RewardLog()
    completions = ["4", "5", "4"]
    kwargs = scoring.reward_kwargs({"question": ["2+2"] * 3, "answer": ["4"] * 3}, [[1]] * 3, log=log)
    scores, errors = call.score(["2+2"] * 3, completions, kwargs)
    assert errors == 0
    assert len(scores) == 3 and all(s is None or 0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == scores[2]  # the repeat came from the cache
    assert call.fn.client.counts.as_dict() == {"requests": 2, "retries": 0, "cache_hits": 1, "failures": 0}
    replies = log.take_extra(3)["judge/details"]
    assert replies[0] == replies[2] and all(
        isinstance(r, str) and not r.startswith("(no reply") for r in replies
    )


def test_grpo_trains_judged_by_transformers_serve(served_model, tmp_path):
    url, model = served_model
    args = {"base_url": url, "model": model, "rubric": RUBRIC, "max_tokens": 4, "unparsed": "zero"}
    done = train(tmp_path, args)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [r for r in metric_rows(tmp_path / "run") if "rewards/judge" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["rewards/judge"] <= 1.0 for r in rows)
