"""What `validate` accepts, `train` can start (issue 11): a seeded sample of the fuzz cases that validate accepts,
each trained for one step. None may crash: exit 0, or exit 2 with one line saying what to change."""

from __future__ import annotations

import os
import random

import pytest

from tests.fuzz_corpus import SEED, classify, corpus, run_case

pytestmark = pytest.mark.slow

SAMPLE_SIZE = 10


def _accepted_sample(tmp_path_factory) -> list:
    accepted = []
    for case in corpus():
        if case.id.startswith(("junk:", "data:directory")):
            continue
        if case.id.startswith(
            "gsm8k-"
        ):  # the real-model recipes load Qwen from the Hub: nothing to train offline
            continue
        if classify(run_case(case, tmp_path_factory.mktemp("probe"))) == "0":
            accepted.append(case)
    return random.Random(SEED).sample(accepted, SAMPLE_SIZE)


@pytest.fixture(scope="module")
def accepted(tmp_path_factory):
    return _accepted_sample(tmp_path_factory)


def test_accepted_cases_start_training(accepted, tmp_path):
    from typer.testing import CliRunner

    from grpo_cli.cli import app

    failures = []
    for i, case in enumerate(accepted):
        directory = tmp_path / f"case{i}"
        directory.mkdir()
        case.write(directory)
        previous = os.getcwd()
        os.chdir(directory)
        try:
            argv = [
                "train",
                "recipe.yaml",
                *case.overrides,
                "trainer.max_steps=1",
                "-o",
                str(directory / "run"),
            ]
            result = CliRunner().invoke(app, argv)
        finally:
            os.chdir(previous)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        # What train says before it fails may come first (warnings, "TRL defaults in effect"); the error is one
        # line, the last, with no traceback.
        lines = result.stderr.splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        one_line = (
            result.exit_code == 2
            and errors == lines[-1:]
            and len(errors) == 1
            and "Traceback" not in result.stderr
        )
        if crashed or not (result.exit_code == 0 or one_line):
            failures.append(
                f"{case.id}: exit {result.exit_code}, {result.exception!r}, {result.stderr[-300:]!r}"
            )
    assert not failures, "\n".join(failures)
