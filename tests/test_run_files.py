"""Reading a run directory back (`run_dir.read_*`, the one reader of each file) and writing summary.json."""

from __future__ import annotations

import json

import pytest

from grpo_cli import model_sources, run_dir, run_files
from grpo_cli.errors import UserError


def write_metrics(run, rewards):
    run.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": i + 1, "reward": r}) for i, r in enumerate(rewards)]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))


def test_summary_keys_are_the_same_for_a_short_and_a_long_run(tmp_path):
    write_metrics(tmp_path / "short", [0.5])
    write_metrics(tmp_path / "long", [float(i) for i in range(60)])
    short = run_files.write_summary(tmp_path / "short", algorithm="grpo", wall_time_s=1.0)
    long = run_files.write_summary(tmp_path / "long", algorithm="grpo", wall_time_s=2.0)

    assert short.keys() == long.keys()
    assert json.loads((tmp_path / "long" / "summary.json").read_text()).keys() == long.keys()
    assert (short["first_mean_reward"], short["last_mean_reward"], short["mean_reward_window"]) == (
        0.5,
        0.5,
        1,
    )
    # 60 rewards: a window of 10 steps, the means of 0..9 and 50..59.
    assert (long["first_mean_reward"], long["last_mean_reward"], long["mean_reward_window"]) == (
        4.5,
        54.5,
        10,
    )
    assert (long["first_reward"], long["last_reward"], long["steps"]) == (0.0, 59.0, 60)


def test_summary_without_a_logged_reward_has_the_keys_with_no_values(tmp_path):
    write_metrics(tmp_path, [])
    summary = run_files.write_summary(tmp_path, algorithm="ppo", wall_time_s=0.0)
    assert [summary[k] for k in ("first_mean_reward", "last_mean_reward", "mean_reward_window")] == [None] * 3


def test_train_says_nothing_about_rewards_when_none_was_logged(tiny_recipe, tmp_path, cli, monkeypatch):
    from grpo_cli.algorithms import grpo

    summary = {"steps": 5, "wall_time_s": 5.0, "first_reward": None, "last_reward": None}
    monkeypatch.setattr(grpo, "train", lambda recipe, out, resume_from=None: summary)
    result = cli("train", tiny_recipe(), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"done: 5 steps in 5 s; wrote {tmp_path / 'run'}"

    # The means over summary.json's window, not single steps (issue 22, item 16).
    summary.update(first_reward=0.25, last_reward=1.5, first_mean_reward=0.5, last_mean_reward=1.25)
    summary.update(mean_reward_window=2)
    result = cli("train", tiny_recipe(), "-o", tmp_path / "run2")
    assert (
        result.stdout.splitlines()[-1]
        == f"done: 5 steps in 5 s, reward 0.500 -> 1.250 (means of the first and last 2 steps); wrote {tmp_path / 'run2'}"
    )


def test_absent_files_read_as_nothing(tmp_path):
    assert run_files.read_recipe(tmp_path) is None
    assert run_files.read_summary(tmp_path) is None
    assert run_files.read_metrics(tmp_path) == []


def test_metrics_skip_a_cut_last_line_and_keep_the_later_line_of_a_step(tmp_path):
    lines = [
        '{"step": 1, "reward": 0.1}',
        '{"step": 2, "reward": 0.2}',
        '{"step": 2, "reward": 0.3}',
        '{"step": 3, "re',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    assert run_files.read_metrics(tmp_path) == [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.3}]

    (tmp_path / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", lines[1]]))
    with pytest.raises(UserError, match=r"metrics.jsonl, line 2, is not a JSON object"):
        run_files.read_metrics(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("model: [unclosed", "is not valid YAML"), ("- a list\n", "should hold a mapping")],
)
def test_a_broken_recipe_yaml_is_one_error_for_every_reader(tmp_path, tiny_recipe, text, message):
    """eval's base-model lookup, report and --resume all read recipe.yaml through run_files.read_recipe."""
    from grpo_cli.recipe import load_recipe

    (tmp_path / "recipe.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        run_files.read_recipe(tmp_path)
    with pytest.raises(UserError, match=message):  # used to be a yaml traceback
        run_dir.check_resume_matches(load_recipe(tiny_recipe()), tmp_path)
    recipe = load_recipe(tiny_recipe())
    base = model_sources.ModelSource("recipe", spec=recipe.model, seed=recipe.seed)
    with pytest.raises(UserError, match=message):  # used to fall back silently to the given recipe's model
        model_sources.run_base(tmp_path, base)


def test_a_runs_own_recipe_names_its_base_model(tmp_path, tiny_recipe):
    from grpo_cli.recipe import load_recipe

    recipe = load_recipe(tiny_recipe())
    (tmp_path / "recipe.yaml").write_text("model: {name_or_path: some/model}\nseed: 7\n")
    base = model_sources.run_base(
        tmp_path, model_sources.ModelSource("recipe", spec=recipe.model, seed=recipe.seed)
    )
    assert (base.kind, base.spec.name_or_path, base.seed) == ("recipe", "some/model", 7)
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    assert model_sources.run_root(checkpoint) == tmp_path and model_sources.run_root(tmp_path) == tmp_path


def test_the_algorithm_of_a_run_is_its_markers_else_its_recipes(tmp_path):
    """run.json (written first) says which algorithm trained a run; a run from before the marker has its
    recipe.yaml (GRPO when it names none); a damaged marker is the one error of every reader."""
    assert run_files.run_algorithm(tmp_path) is None and run_files.run_kind(tmp_path) is None
    (tmp_path / "recipe.yaml").write_text("model: {name_or_path: some/model}\n")
    assert run_files.run_algorithm(tmp_path) == "grpo" and run_files.run_kind(tmp_path) == "policy"
    (tmp_path / "recipe.yaml").write_text("algorithm: sft\n")
    assert run_files.run_algorithm(tmp_path) == "sft"
    run_dir.write_marker(tmp_path, "reward")  # the marker wins
    assert run_files.run_algorithm(tmp_path) == "reward" and run_files.run_kind(tmp_path) == "reward model"
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(UserError, match=r"run.json is damaged: it is not valid JSON .*; repair or delete it"):
        run_files.run_algorithm(tmp_path)


def test_eval_of_a_checkpoint_with_a_damaged_trainer_state_names_the_file(tmp_path, cli):
    """A damaged trainer_state.json used to read as step 0 for the rewards, silently; it is the one error now."""
    from tests.tiny_runs import fake_run

    run = fake_run(tmp_path)
    state = run / "checkpoint-2" / "trainer_state.json"
    state.write_text('{"global_step": 2, "max_')
    result = cli("eval", tmp_path / "tiny.yaml", "--adapter", run / "checkpoint-2")
    assert result.exit_code == 2, result.output
    assert f"{state} is damaged: it is not valid JSON" in result.stderr
    assert "repair or delete it" in result.stderr


def test_files_written_together_are_moved_in_together_whatever_signal_comes(tmp_path, monkeypatch):
    """Issue 23 item 10: SIGINT between eval's two files left eval_samples.jsonl without its eval.json. A signal
    that arrives while they are moved in waits until both are in place."""
    import os
    import signal

    from grpo_cli import run_files

    for name in ("eval.json", "eval_samples.jsonl"):
        (tmp_path / name).write_text("old")
    real_replace = os.replace

    def replace_then_interrupt(source, target):
        real_replace(source, target)
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came right after the first file

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_files.atomic_write_all({tmp_path / "eval_samples.jsonl": "new", tmp_path / "eval.json": "new"})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "eval.json": "new",
        "eval_samples.jsonl": "new",
    }


def test_files_written_together_stay_as_they_were_when_one_cannot_be_written(tmp_path):
    from grpo_cli import run_files
    from grpo_cli.errors import UserError

    (tmp_path / "eval.json").write_text("old")
    (tmp_path / "blocked").write_text("a file where the second one's folder would be: writing it fails")
    with pytest.raises(UserError, match="cannot write"):
        run_files.atomic_write_all({tmp_path / "eval.json": "new", tmp_path / "blocked" / "x.json": "new"})
    assert (tmp_path / "eval.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "eval.json"]
