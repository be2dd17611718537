"""SFT and reward-model recipes, chaining runs by directory, and pipelines: what `validate` and the data
preparation say, without training (the real runs are in test_train_stages.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from grpo_cli import data, pipeline, prompting, tasks, validation
from grpo_cli.errors import UserError
from grpo_cli.recipe import DatasetSection, load_recipe
from tests.helpers import TINY_RECIPE

SFT = {**TINY_RECIPE, "algorithm": "sft", "lora": None, "rewards": [], "trainer": {"max_steps": 2}}
SFT["dataset"] = {**TINY_RECIPE["dataset"], "completion": "{answer}"}
REWARD = {**SFT, "algorithm": "reward", "dataset": {"source": "pairs.jsonl", "eval_size": 2}}


def write(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(UserError) as info:
        validation.validate(str(path), list(overrides))
    return info.value.problems or [str(info.value)]


def fake_finished_run(directory: Path, algorithm: str, finished: bool = True) -> Path:
    directory.mkdir(parents=True)
    (directory / "recipe.yaml").write_text(yaml.safe_dump({**SFT, "algorithm": algorithm}))
    if finished:
        (directory / "summary.json").write_text(json.dumps({"algorithm": algorithm, "steps": 2}))
    return directory


def pairs_file(tmp_path: Path, rows: list[dict]) -> None:
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---- validate: each new kind of mistake, one line each ----


def test_sft_and_reward_recipes_validate(tmp_path):
    assert validation.validate(str(write(tmp_path, SFT))).algorithm == "sft"
    # four prompts: REWARD holds two out (rows of one prompt would be held out together, leaving none to train)
    pairs_file(tmp_path, [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": "0"} for i in range(4)])
    assert validation.validate(str(write(tmp_path, REWARD, "rw.yaml"))).algorithm == "reward"


def test_a_preference_dataset_without_rejected(tmp_path):
    pairs_file(tmp_path, [{"prompt": f"{i}+1=", "chosen": str(i + 1)} for i in range(4)])
    assert problems(write(tmp_path, REWARD)) == [
        "dataset: reward training needs a 'rejected' column (the worse answer to each prompt); columns: prompt, chosen"
    ]


def test_an_sft_dataset_without_a_target(tmp_path):
    recipe = {**SFT, "dataset": {**SFT["dataset"], "completion": None}}
    assert problems(write(tmp_path, recipe)) == [
        "dataset: SFT needs a target: set dataset.completion to a template over the columns (question, answer), "
        'e.g. completion: "{answer}", or provide a `completion` or chat `messages` column'
    ]
    recipe["dataset"]["completion"] = "{solution}"
    assert problems(write(tmp_path, recipe)) == [
        "dataset.completion uses column 'solution', which the dataset does not have; columns: question, answer"
    ]


def test_rewards_given_to_sft_or_reward_training(tmp_path):
    (problem,) = problems(write(tmp_path, {**SFT, "rewards": [{"name": "accuracy"}]}))
    assert problem == (
        "rewards: sft training learns from demonstrations, not rewards; remove `rewards:` "
        "(eval-only metrics go in eval.rewards)"
    )


def test_trainer_fields_are_checked_against_sft_and_reward_configs(tmp_path):
    recipe = {**SFT, "trainer": {"num_generations": 4, "max_length": 64, "completion_only_loss": True}}
    assert problems(write(tmp_path, recipe)) == [
        "trainer.num_generations: not a field of TRL's SFTConfig (SFT generates nothing; remove it)"
    ]
    pairs_file(tmp_path, [{"chosen": "2", "rejected": "3"}] * 4)
    recipe = {**REWARD, "trainer": {"center_rewards_coefficient": 0.01, "completion_only_loss": True}}
    (problem,) = problems(write(tmp_path, recipe))
    assert problem.startswith("trainer.completion_only_loss: not a field of TRL's RewardConfig")


def test_a_reward_run_refuses_chat_template_path_which_trl_applies_after_the_pairs_are_tokenized(
    cli, tmp_path
):
    pairs_file(tmp_path, [{"chosen": "2", "rejected": "3"}] * 4)
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    path = write(tmp_path, {**REWARD, "trainer": {"chat_template_path": str(tmp_path / "t.jinja")}})
    result = cli("validate", path)
    assert result.exit_code == 2
    assert (
        result.stderr.count("trainer.chat_template_path: a reward run renders its pairs with the model's own")
        == 1
    )
    assert "save the template with the model's tokenizer (save_pretrained)" in result.stderr
    sft = {**SFT, "trainer": {"chat_template_path": str(tmp_path / "t.jinja")}}  # SFT lets TRL tokenize: fine
    assert validation.validate(str(write(tmp_path, sft, "sft.yaml"))).algorithm == "sft"


def test_model_run_must_be_a_finished_policy_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # model.run, like output_dir, is where the command runs
    fake_finished_run(tmp_path / "runs" / "sft", "sft")
    fake_finished_run(tmp_path / "runs" / "rm", "reward")
    fake_finished_run(tmp_path / "runs" / "cut", "sft", finished=False)
    grpo = {**TINY_RECIPE, "model": {"run": "runs/sft"}}
    assert validation.validate(str(write(tmp_path, grpo))).model.run == str(tmp_path / "runs" / "sft")
    path = write(tmp_path, grpo)
    assert problems(path, ["model.run=runs/rm"]) == [
        "model.run: runs/rm is a reward-model run, not a policy; use it as a reward "
        "(rewards: [{name: 'model:runs/rm'}])"
    ]
    assert problems(path, ["model.run=runs/none"]) == [
        f"model.run: runs/none does not exist ({tmp_path / 'runs' / 'none'}); train the stage that writes it first"
    ]
    assert problems(path, ["model.run=runs/cut"]) == [
        "model.run: the run in runs/cut is not finished (no summary.json); finish it with --resume"
    ]
    # A reward run may start from a reward run or a policy's model; it takes no GRPO-only keys either way.
    pairs_file(tmp_path, [{"chosen": "2", "rejected": "3"}] * 4)
    assert validation.validate(str(write(tmp_path, {**REWARD, "model": {"run": "runs/rm"}}))).model.run


def test_a_model_reward_naming_a_run_must_be_a_reward_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_finished_run(tmp_path / "runs" / "sft", "sft")
    fake_finished_run(tmp_path / "runs" / "rm", "reward")
    (
        tmp_path / "recipes"
    ).mkdir()  # the recipe elsewhere: runs/ is not next to it, so it stays relative to here
    good = {**TINY_RECIPE, "rewards": [{"name": "model:runs/rm"}]}
    assert validation.validate(str(write(tmp_path / "recipes", good))).rewards[0].name == "model:runs/rm"
    bad = {**TINY_RECIPE, "rewards": [{"name": "model:runs/sft"}]}
    assert problems(write(tmp_path / "recipes", bad)) == [
        "rewards[0] (model:runs/sft): runs/sft holds a SFT run, not a reward model (algorithm: reward)"
    ]


# ---- data ----


def test_sft_rows_from_a_template_a_completion_column_or_messages(tmp_path):
    from datasets import Dataset

    from grpo_cli.models import char_tokenizer

    recipe = load_recipe(write(tmp_path, SFT))
    rows = Dataset.from_list([{"question": "1+2=", "answer": "3"}])
    assert prompting.prepare_sft(rows, recipe.dataset, char_tokenizer("0123456789+=")).to_list() == [
        {"prompt": "1+2=", "completion": "3"}
    ]
    chat_tokenizer = char_tokenizer("0123456789+=")
    chat_tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    spec = recipe.dataset.model_copy(update={"prompt": None, "completion": None})
    conversation = [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "3"}]
    assert prompting.prepare_sft(
        Dataset.from_list([{"messages": conversation}]), spec, chat_tokenizer
    ).to_list() == [{"prompt": conversation[:1], "completion": conversation[1:]}]
    with pytest.raises(UserError, match="must end with the assistant's turn"):
        prompting.prepare_sft(Dataset.from_list([{"messages": conversation[:1]}]), spec, chat_tokenizer)


def test_preference_rows_with_or_without_a_prompt(tmp_path):
    from datasets import Dataset

    pairs_file(tmp_path, [{"chosen": "2", "rejected": "3"}] * 4)
    spec = load_recipe(write(tmp_path, REWARD)).dataset
    rows = Dataset.from_list([{"chosen": "2", "rejected": "3"}])
    assert prompting.prepare_preferences(rows, spec, None).to_list() == [
        {"prompt": "", "chosen": "2", "rejected": "3"}
    ]
    with_prompt = spec.model_copy(update={"prompt": "{question}"})
    rows = Dataset.from_list([{"question": "1+1=", "chosen": "2", "rejected": "3"}])
    assert prompting.prepare_preferences(rows, with_prompt, None)[0]["prompt"] == "1+1="


# Role markers, so that a rendering through the template tells itself apart from the plain text.
ROLES_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"


@pytest.mark.parametrize(
    "dataset, row",
    [
        ({"prompt": "{question}"}, {"question": "1+1=", "chosen": "2", "rejected": "3"}),
        ({}, {"prompt": [{"role": "user", "content": "1+1="}], "chosen": "2", "rejected": "3"}),
        ({}, {"prompt": "1+1=", "chosen": "2", "rejected": "3"}),
        (
            {},
            {
                "prompt": [{"role": "user", "content": "1+1="}],
                "chosen": [{"role": "assistant", "content": "2"}],
                "rejected": [{"role": "assistant", "content": "3"}],
            },
        ),
    ],
    ids=["template", "chat-prompt-text-answers", "text-prompt-column", "conversational"],
)
def test_preference_pairs_are_chat_or_text_as_the_policy_stages_decide(dataset, row):
    """Under a chat template every pair is chat, its answers assistant messages, whatever the data's shape (as
    GRPO and PPO build chat prompts and a `model:` reward reads the template's rendering); with
    dataset.chat_template: false, or without a template, both prompt and answers are plain text."""
    from datasets import Dataset

    from grpo_cli.models import char_tokenizer
    from grpo_cli.reward_models import tokenize_pairs

    tokenizer = char_tokenizer("0123456789+=<>/aeinrstu")
    tokenizer.chat_template = ROLES_TEMPLATE
    rows = Dataset.from_list([row])
    spec = DatasetSection(source="pairs.jsonl", **dataset)
    prepared = prompting.prepare_preferences(rows, spec, tokenizer)
    assert (
        prepared[0]["prompt"] == prompting.prepare(rows, spec, tokenizer)[0]["prompt"]
    )  # GRPO's and PPO's prompt
    assert prepared[0]["chosen"] == [{"role": "assistant", "content": "2"}]
    tokens = tokenize_pairs(prepared, tokenizer)
    assert tokenizer.decode(tokens["chosen_ids"][0]) == "<user>1+1=<assistant>2"
    assert tokenizer.decode(tokens["rejected_ids"][0]) == "<user>1+1=<assistant>3"

    for plain, tok in ((spec.model_copy(update={"chat_template": False}), tokenizer), (spec, None)):
        prepared = prompting.prepare_preferences(rows, plain, tok)
        assert prepared.to_list() == [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}]
        tokens = tokenize_pairs(prepared, tokenizer)
        assert tokenizer.decode(tokens["chosen_ids"][0]) == "1+1=2"
        assert tokenizer.decode(tokens["rejected_ids"][0]) == "1+1=3"


def test_addition_preferences_pair_the_sum_with_a_near_miss():
    rows = tasks.addition_preferences_task(size=400, seed=0, max_operand=19)
    assert len(rows) == 400
    assert all(r["chosen"] == r["answer"] != r["rejected"] and int(r["rejected"]) >= 0 for r in rows)
    assert {abs(int(r["chosen"]) - int(r["rejected"])) for r in rows} == {1, 2, 3, 10}
    # the same problems, in the same order, as the policy's task: the held-out split is the same problems
    assert [r["question"] for r in rows] == [
        r["question"] for r in tasks.addition_task(400, 0, max_operand=19)
    ]


def test_several_pairs_per_problem_are_held_out_together_as_the_policy_tasks_problems():
    rows = tasks.addition_preferences_task(size=900, seed=0, max_operand=29, pairs_per_problem=8)
    by_problem: dict[str, set[str]] = {}
    for row in rows:
        assert row["chosen"] == row["answer"] != row["rejected"] and int(row["rejected"]) >= 0
        by_problem.setdefault(row["question"], set()).add(row["rejected"])
    # every near miss that is not negative, once each: 8 for sums of 10 and more
    assert {q: len(w) for q, w in by_problem.items() if q in ("0+0=", "1+2=", "29+29=")} == {
        "0+0=": 4,
        "1+2=": 7,
        "29+29=": 8,
    }
    assert (
        len(rows) == sum(len(w) for w in by_problem.values()) == 900 * 8 - 55 - 3 - 2 * 2 - 3
    )  # no -10 below 10, no -1..-3 below 0
    spec = DatasetSection(
        generate={"task": "addition_preferences", "size": 900, "options": {"max_operand": 29}},
        prompt="{question}",
        eval_size=100,
    )
    pairs_spec = spec.model_copy(
        update={
            "generate": spec.generate.model_copy(
                update={"options": {"max_operand": 29, "pairs_per_problem": 8}}
            )
        }
    )
    policy = spec.model_copy(update={"generate": spec.generate.model_copy(update={"task": "addition"})})
    train, held_out = data.load_splits(pairs_spec, seed=0)
    _, policy_held_out = data.load_splits(policy, seed=0)
    assert set(held_out["question"]) == set(policy_held_out["question"])  # the same 100 problems
    assert not set(train["question"]) & set(held_out["question"])  # no problem on both sides
    assert len(train) + len(held_out) == len(rows) and len(set(held_out["question"])) == 100
    # one pair a problem: the row split datasets would make (the same rows, in the same order)
    _, one_held_out = data.load_splits(spec, seed=0)
    assert one_held_out["question"] == policy_held_out["question"]
    assert tasks.check_task(spec.generate.model_copy(update={"options": {"pairs_per_problem": 9}})) == [
        "dataset.generate.options: pairs_per_problem must be between 1 and 8, got 9"
    ]


def test_validate_counts_held_out_prompts_as_train_splits_them(cli, tmp_path):
    """Three rows but two prompts: eval_size 2 leaves nothing to train on, and validate must say so, not train."""
    rows = [("1+1=", "2", "3"), ("1+1=", "2", "4"), ("2+2=", "4", "5")]
    (tmp_path / "pairs.jsonl").write_text(
        "".join(json.dumps({"question": q, "chosen": c, "rejected": r}) + "\n" for q, c, r in rows)
    )
    recipe = {**TINY_RECIPE, "algorithm": "reward", "rewards": [], "trainer": {"max_steps": 1}}
    recipe["dataset"] = {"source": "pairs.jsonl", "prompt": "{question}", "eval_size": 2}
    (tmp_path / "rm.yaml").write_text(yaml.safe_dump(recipe))
    expected = "dataset.eval_size=2 leaves no training rows (dataset has 2 prompts)"
    result = cli("validate", tmp_path / "rm.yaml")
    assert result.exit_code == 2 and result.stderr == f"error: rm.yaml: {expected}\n"
    with pytest.raises(UserError, match=rf"^{re.escape(expected)}$"):
        data.load_splits(load_recipe(tmp_path / "rm.yaml").dataset, seed=0)
    recipe["dataset"]["eval_size"] = 1  # one prompt's two pairs held out, the other's trained on
    (tmp_path / "rm.yaml").write_text(yaml.safe_dump(recipe))
    assert cli("validate", tmp_path / "rm.yaml").exit_code == 0


def test_reward_pairs_are_tokenized_as_they_are_scored():
    from grpo_cli.models import char_tokenizer
    from grpo_cli.reward_models import tokenize_pairs

    tokenizer = char_tokenizer("0123456789+=")
    tokens = tokenize_pairs({"prompt": ["1+1="], "chosen": ["2"], "rejected": ["13"]}, tokenizer)
    assert tokenizer.decode(tokens["chosen_ids"][0]) == "1+1=2"  # no EOS: GRPO and PPO score without one
    assert tokenizer.decode(tokens["rejected_ids"][0]) == "1+1=13"


# ---- pipelines ----


def test_the_shipped_pipeline_validates_with_earlier_stages_counted(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here: the later stages' runs are the earlier stages' output_dirs
    result = cli("validate", "pipeline")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "pipeline: ok (pipeline of 4 stages: sft.yaml (sft), reward.yaml (reward), ppo.yaml (ppo), grpo.yaml (grpo))"
    )
    alone = cli("validate", "pipeline/grpo")  # a stage on its own needs the SFT run to exist
    assert alone.exit_code == 2
    assert (
        f"model.run: runs/pipeline-sft does not exist ({tmp_path / 'runs' / 'pipeline-sft'}); train the stage that "
        "writes it first"
    ) in alone.stderr


def test_a_pipeline_stage_that_needs_a_later_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {**SFT, "output_dir": "runs/a"}, "a.yaml")
    write(tmp_path, {**TINY_RECIPE, "model": {"run": "runs/a"}, "output_dir": "runs/b"}, "b.yaml")
    path = write(tmp_path, {"stages": ["b.yaml", "a.yaml"]}, "p.yaml")
    with pytest.raises(UserError) as info:
        pipeline.validate(str(path))
    assert info.value.problems == [
        f"b.yaml: model.run: runs/a does not exist ({tmp_path / 'runs' / 'a'}); train the stage that writes it first"
    ]
    write(tmp_path, {"stages": ["a.yaml", "b.yaml"]}, "p.yaml")
    assert [r.algorithm for _path, r in pipeline.validate(str(path))] == [
        "sft",
        "grpo",
    ]
    with pytest.raises(UserError, match="a pipeline takes no KEY=VALUE overrides"):
        pipeline.validate(str(path), ["seed=1"])
    path.write_text("stages: [a.yaml]\nseed: 3\n")
    with pytest.raises(
        UserError, match=r"a pipeline file holds only `stages:` \(a list of recipes\), not seed"
    ):
        pipeline.validate(str(path))


def test_recipes_ls_names_the_pipeline(cli):
    listing = cli("recipes", "ls")
    assert any(line.split()[:2] == ["pipeline", "pipeline"] for line in listing.stdout.splitlines())


def test_report_reads_a_pipeline_as_its_stages_runs():
    assert [str(p) for p in pipeline.run_dirs("pipeline")] == [
        "runs/pipeline-sft",
        "runs/pipeline-reward",
        "runs/pipeline-ppo",
        "runs/pipeline-grpo",
    ]
    assert pipeline.run_dirs("runs/x") == [Path("runs/x")]  # not a pipeline: a run directory as given


def test_report_of_a_pipeline_goes_beside_its_runs_not_into_the_first(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stage in ("sft", "grpo"):
        run = tmp_path / "runs" / f"pipeline-{stage}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    result = cli("report", "quickstart")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {Path('runs') / 'report-quickstart' / 'report.md'} and ")
    assert not (tmp_path / "runs" / "pipeline-sft" / "report").exists()  # `report pipeline` would share it
    assert cli("report", "runs/pipeline-sft").stdout.startswith("wrote runs/pipeline-sft/report/report.md")


def test_run_paths_from_another_directory_say_where_they_were_looked_for(cli, tmp_path, monkeypatch):
    """output_dir and model.run are relative to the current directory (as -o is); from elsewhere, every message
    about a missing run shows the absolute path looked at, says so, and how to fix it (issue 22, item 13)."""
    proj, other = tmp_path / "proj", tmp_path / "other"
    other.mkdir()
    proj.mkdir()
    write(proj, {**SFT, "output_dir": "runs/a"}, "a.yaml")
    write(proj, {**TINY_RECIPE, "model": {"run": "runs/a"}, "output_dir": "runs/b"}, "b.yaml")
    write(proj, {"stages": ["a.yaml", "b.yaml"]}, "p.yaml")
    fake_finished_run(proj / "runs" / "a", "sft")
    note = (
        "run directories (output_dir, model.run) are relative to the current directory, not to the recipe's "
        f"{proj}: run grpo-cli from there, or write absolute paths"
    )
    monkeypatch.chdir(other)
    result = cli("validate", "../proj/b.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: b.yaml: model.run: runs/a does not exist ({other / 'runs' / 'a'}; {proj / 'runs' / 'a'} "
        f"exists; {note}); train the stage that writes it first\n"
    )
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("eval", "../proj/p.yaml")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"stage 1/2 (sft, {proj / 'a.yaml'} -> runs/a): not trained ({other / 'runs' / 'a'}; "
        f"{proj / 'runs' / 'a'} exists; {note}); skipped"
    )
    assert result.stderr.splitlines()[-1].endswith(
        f"not evaluated ({proj / 'a.yaml'}, {proj / 'b.yaml'}): {note}"
    )
    result = cli("report", "../proj/p.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {proj / 'a.yaml'}: its run runs/a does not exist ({other / 'runs' / 'a'}; {proj / 'runs' / 'a'} "
        f"exists; {note}); train the pipeline first\n"
    )
    write(proj, {**TINY_RECIPE, "rewards": [{"name": "model:runs/rm"}], "output_dir": "runs/c"}, "c.yaml")
    (other / "runs").mkdir()  # runs/rm is then a path here, not a Hub id
    result = cli("validate", "../proj/c.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: c.yaml: rewards[0] (model:runs/rm): runs/rm does not exist ({other / 'runs' / 'rm'}; {note}); "
        "train the stage that writes it first\n"
    )
    # From the recipe's directory: found, and the pipeline validates.
    monkeypatch.chdir(proj)
    assert cli("validate", "b.yaml").exit_code == 0, cli("validate", "b.yaml").output
    assert cli("validate", "p.yaml").exit_code == 0


# ---- eval of a pipeline: without training (the real one is in test_train_stages.py) ----


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--adapter", "runs/x"],
            "--adapter applies to one recipe: grpo-cli eval pipeline/grpo --adapter runs/x --baseline",
        ),
        (["--model", "m"], "--model applies to one recipe: grpo-cli eval pipeline/grpo --model m"),
        (
            ["-o", "out"],
            "--output-dir applies to one recipe: "
            "grpo-cli eval pipeline/grpo --adapter runs/pipeline-grpo --baseline --output-dir out",
        ),
        (
            ["seed=1", "--baseline"],  # --baseline is implied for a pipeline: accepted, not the problem
            "KEY=VALUE overrides apply to one recipe: "
            "grpo-cli eval pipeline/grpo --adapter runs/pipeline-grpo --baseline seed=1",
        ),
    ],
)
def test_eval_of_a_pipeline_refuses_what_names_one_model(cli, tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    result = cli("eval", "pipeline", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: eval of a pipeline file evaluates each stage's own run; {expected}\n"
    assert result.stdout == ""


def test_eval_of_a_pipeline_reports_each_stage_without_a_result_and_exits_2(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {**SFT, "output_dir": "runs/a"}, "a.yaml")
    write(tmp_path, {**TINY_RECIPE, "model": {"run": "runs/a"}, "output_dir": "runs/b"}, "b.yaml")
    write(tmp_path, {**TINY_RECIPE, "model": {"run": "runs/a"}, "output_dir": "runs/c"}, "c.yaml")
    write(tmp_path, {"stages": ["a.yaml", "b.yaml", "c.yaml"]}, "p.yaml")
    fake_finished_run(tmp_path / "runs" / "a", "sft")  # finished, but holds no model: its evaluation fails
    fake_finished_run(tmp_path / "runs" / "b", "grpo", finished=False)  # no summary.json: still training
    monkeypatch.setenv("COLUMNS", "200")  # the table's cells on one line each
    result = cli("eval", "p.yaml", "--limit", "2")  # runs/c: never trained
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "stage 1/3 (sft, a.yaml -> runs/a): evaluating",
        "stage 1/3 (sft, a.yaml -> runs/a): error: --adapter runs/a holds neither a peft adapter "
        "(adapter_config.json) nor a model (config.json); give the output directory of a finished training run",
        "stage 2/3 (grpo, b.yaml -> runs/b): not finished (no summary.json); skipped",
        f"stage 3/3 (grpo, c.yaml -> runs/c): not trained ({tmp_path / 'runs' / 'c'}); skipped",
        "error: 3 of 3 stages not evaluated (a.yaml, b.yaml, c.yaml): `grpo-cli train p.yaml` trains what is "
        "missing; see the error above",
    ]
    rows = [
        " | ".join(c.strip() for c in line.split("│")[1:-1])
        for line in result.stdout.splitlines()
        if "│" in line
    ]
    assert rows == [
        "a.yaml | runs/a | failed (its error above) | - | - | - | untrained (from_config)",
        "b.yaml | runs/b | not finished (no summary.json) | - | - | - | runs/a",
        "c.yaml | runs/c | not trained | - | - | - | runs/a",
    ]
