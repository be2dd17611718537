"""A resumed GRPO run is the run it continues (issue 23): on a CPU, a run stopped by SIGINT and resumed with
--resume logs exactly the metrics of an uninterrupted one at every step and ends with the same weights.

The signal comes from a reward (`stop.py`) at a chosen call, so the run stops at a known step every time: the
reward is in both runs' recipe and scores 0, so only the environment variable tells the runs apart.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]

STOP = '''
import os
import signal

calls = 0


def stop(completions, **kwargs):
    """Ctrl-C to this process at the STOP_AT_CALL-th call (counted from this process's start); scores 0."""
    global calls
    calls += 1
    if os.environ.get("STOP_AT_CALL") == str(calls):
        os.kill(os.getpid(), signal.SIGINT)
    return [0.0] * len(completions)
'''

# Timings differ between any two runs; everything else must not.
CLOCKS = ("time", "step_time")


def train(
    tmp_path: Path, run: Path, *args: str, stop_at_call: int | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    env.pop("STOP_AT_CALL", None)
    if stop_at_call is not None:
        env["STOP_AT_CALL"] = str(stop_at_call)
    command = [sys.executable, "-m", "grpo_cli", "train", "r.yaml", "--output-dir", str(run), *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in CLOCKS and not k.endswith("/seconds")} for row in rows]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "adapter_model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("trainer", "stops"),
    [
        # 8 train prompts, 4 per generation, each generation trained on over 2 steps: 4 steps an epoch, rewards
        # called at steps 1, 3, 5, 7. Stopped at step 3 (between two steps of one generation, epoch 0), then the
        # resumed process at its 2nd call, step 7 (the same in epoch 1, the prompts shuffled again).
        ({"steps_per_generation": 2}, [(2, 3), (2, 7)]),
        # One generation a step, 2 steps an epoch: stopped at step 2 (the last of epoch 0), then at step 5.
        ({}, [(2, 2), (3, 5)]),
    ],
    ids=["between-generations", "epoch-ends"],
)
def test_a_resumed_grpo_run_matches_the_uninterrupted_one(tmp_path, trainer, stops):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["dataset"]["generate"]["size"] = 16 if trainer else 12  # eval_size 8: 8 or 4 train prompts
    recipe["rewards"].append({"name": "./stop.py:stop"})
    recipe["trainer"].update(max_steps=8, save_steps=100, **trainer)
    (tmp_path / "stop.py").write_text(STOP)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))

    reference = tmp_path / "reference"
    result = train(tmp_path, reference)
    assert result.returncode == 0, result.stderr[-3000:]

    run = tmp_path / "interrupted"
    for index, (call, step) in enumerate(stops):
        result = train(tmp_path, run, *(["--resume"] if index else []), stop_at_call=call)
        assert result.returncode == 130, result.stderr[-3000:]
        assert f"stopped at step {step}, saved in {run / f'checkpoint-{step}'}" in result.stderr
    result = train(tmp_path, run, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {run / f'checkpoint-{stops[-1][1]}'}" in result.stderr

    expected, got = metrics(reference), metrics(run)
    assert [row["step"] for row in got] == list(range(1, 9))
    for want, have in zip(expected, got, strict=True):
        assert have == want, f"step {want['step']}"
    final, resumed = weights(reference), weights(run)
    assert final.keys() == resumed.keys()
    for name, tensor in final.items():
        assert resumed[name].equal(tensor), name
