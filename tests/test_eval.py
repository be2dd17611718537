"""`grpo-cli eval`: pass@k, metrics, generation, model loading from run directories, outputs and errors.

The fast tests build tiny models in code and fake the run directories that training writes (the same layout:
recipe.yaml, base_model/, an adapter or a full model, tokenizer, summary.json). The slow ones train for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from grpo_cli import generation, models, prompting, reward_binding
from grpo_cli.cli import handle_errors
from grpo_cli.commands.eval import evaluate as eval_command
from grpo_cli.errors import UserError
from grpo_cli.eval_stats import difference, pass_at_k, summarize
from grpo_cli.generation import Sample
from grpo_cli.recipe import FromConfig, LoraSection, RewardEntry, load_recipe
from grpo_cli.workflows import evaluate_generations as evaluate

VOCABULARY = "0123456789+="

RECIPE = """\
seed: 0
model:
  from_config: {vocabulary: "0123456789+=", hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2}
dataset:
  generate: {task: addition, size: 40}
  prompt: "{question}"
  eval_size: 6
rewards:
  - name: accuracy
  - name: ./stub_rewards.py:length
    weight: 0.5
trainer:
  max_completion_length: 3
  num_generations: 2
  per_device_train_batch_size: 4
  max_steps: 2
  learning_rate: 0.01
"""

STUB_REWARDS = '''\
def _text(completion):
    return completion if isinstance(completion, str) else completion[-1]["content"]


def length(completions, **kwargs):
    """The completion's length in characters (one token per character with the test tokenizer)."""
    return [float(len(_text(c))) for c in completions]


def even_answer(completions, answer, **kwargs):
    """1 when the row's answer is even: a pass/fail score known from the data alone."""
    return [float(int(a) % 2 == 0) for a in answer]


def is_chat(completions, **kwargs):
    """1 for a completion handed over as chat messages from the assistant, 0 for plain text."""
    return [float(isinstance(c, list) and c[0]["role"] == "assistant") for c in completions]
'''


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def app() -> typer.Typer:
    """grpo_cli.cli.app once `eval` is registered there; until then a one-command app with the same handler."""
    from grpo_cli.cli import app as main_app

    if any(c.name == "eval" for c in main_app.registered_commands):
        return main_app
    local = typer.Typer()
    local.callback()(lambda: None)  # keep `eval` as a subcommand name
    local.command("eval")(handle_errors(eval_command))
    return local


def invoke(runner: CliRunner, *args: str, cwd: Path | None = None):
    if cwd is None:
        return runner.invoke(app(), ["eval", *map(str, args)])
    with runner.isolated_filesystem(temp_dir=cwd):
        return runner.invoke(app(), ["eval", *map(str, args)])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "stub_rewards.py").write_text(STUB_REWARDS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_spec() -> FromConfig:
    return FromConfig(vocabulary=VOCABULARY, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)


def varied_model():
    """A tiny model with weights large enough that its greedy output depends on the prompt (a freshly
    initialised one answers everything with the same token)."""
    import torch

    model, tokenizer = models.build_from_config(tiny_spec(), seed=3)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return model, tokenizer


# ---- pass@k and metrics, by hand ----


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 0.7),
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 4, 2, 1.0),
        (5, 5, 1, 1.0),
        (1, 1, 1, 1.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_combinatorial_definition():
    # 1 - C(n-c, k) / C(n, k) for n=10, c=3, k=4: 1 - 35/210.
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - 35 / 210)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, 2, 0), (3, 1, 4)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _samples(table: list[list[tuple[float | None, float, int, bool]]]) -> list[list[Sample]]:
    """[prompt][sample] of (pass score, graded score, length, clipped)."""
    return [
        [
            Sample(i, j, "x" * length, [0] * length, clipped, {"pass": p, "graded": g}, total=(p or 0) + g)
            for j, (p, g, length, clipped) in enumerate(row)
        ]
        for i, row in enumerate(table)
    ]


def test_summarize_known_values():
    samples = _samples(
        [
            [(1.0, 0.5, 2, False), (0.0, 0.5, 4, True), (1.0, 0.0, 2, False)],
            [(0.0, 1.0, 4, True), (0.0, 0.25, 4, True), (0.0, 0.25, 2, False)],
        ]
    )
    metrics = summarize(samples, ["pass", "graded"], with_total=True)
    assert metrics["rewards/pass"] == pytest.approx(2 / 6)
    assert metrics["rewards/pass/std"] == pytest.approx((2 / 6 * 4 / 6) ** 0.5)  # population std of 0/1
    # pass@1 per prompt: 2/3 and 0; pass@3: 1 and 0.
    assert metrics["rewards/pass/pass@1"] == pytest.approx(1 / 3)
    assert metrics["rewards/pass/pass@3"] == pytest.approx(0.5)
    assert metrics["rewards/graded"] == pytest.approx(2.5 / 6)
    assert "rewards/graded/pass@1" not in metrics  # not pass/fail
    assert metrics["reward"] == pytest.approx((2 + 2.5) / 6)
    assert metrics["completion_length"] == pytest.approx(18 / 6)
    assert metrics["clipped_ratio"] == pytest.approx(3 / 6)


def test_summarize_skips_none_scores_and_prompts_scored_too_rarely():
    samples = _samples([[(1.0, 0, 1, False), (None, 0, 1, False)], [(0.0, 0, 1, False), (1.0, 0, 1, False)]])
    metrics = summarize(samples, ["pass"], with_total=False)
    assert metrics["rewards/pass"] == pytest.approx(2 / 3)
    assert metrics["rewards/pass/pass@1"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["rewards/pass/pass@2"] == pytest.approx(1.0)  # only the second prompt has 2 scores
    assert "reward" not in metrics


def test_difference_is_tuned_minus_base():
    delta = difference({"a": 0.5, "b": None, "c": 1.0}, {"a": 0.25, "b": 1.0})
    assert delta == {"a": 0.25, "b": None}


# ---- generation on tiny models ----


def forced_model(token: str):
    """A tiny model that always predicts `token`, whatever the prompt: the output layer is a constant."""
    import torch

    model, tokenizer = models.build_from_config(tiny_spec(), seed=0)
    head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.fill_(-10.0)
        head.bias[tokenizer.convert_tokens_to_ids(token)] = 10.0
    model.lm_head = head
    return model, tokenizer


@pytest.mark.parametrize(
    ("token", "text", "length", "clipped"),
    [("7", "777", 3, True), (models.EOS, "", 1, False)],
)
def test_metrics_of_a_model_with_known_output(tmp_path, token, text, length, clipped):
    model, tokenizer = forced_model(token)
    rows = [
        {"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in [(1, 1), (2, 3), (4, 4), (3, 4), (0, 2)]
    ]
    sampling = generation.Sampling(num_samples=3, max_new_tokens=3, seed=0)
    prompt_ids = prompting.tokenize_prompts(tokenizer, [r["prompt"] for r in rows])
    samples = generation.generate(model, tokenizer, prompt_ids, sampling, batch_size=4)
    assert [[s.text for s in group] for group in samples] == [[text] * 3] * 5

    (tmp_path / "stub.py").write_text(STUB_REWARDS)
    entries = [RewardEntry(name=f"{tmp_path / 'stub.py'}:{name}") for name in ("length", "even_answer")]
    rewards = evaluate.Rewards(reward_binding.bind_all(entries), [])
    evaluate.score(samples, rows, rewards, chat=False, batch_size=4)
    metrics = summarize(samples, rewards.names, with_total=True)
    assert metrics["completion_length"] == length
    assert metrics["clipped_ratio"] == float(clipped)
    assert metrics["rewards/length"] == len(text)
    assert metrics["rewards/length/std"] == 0
    # Answers 2, 5, 8, 7, 2: three of five even, every sample of a prompt alike.
    assert metrics["rewards/even_answer"] == pytest.approx(0.6)
    assert metrics["rewards/even_answer/pass@1"] == pytest.approx(0.6)
    assert metrics["rewards/even_answer/pass@3"] == pytest.approx(0.6)
    assert metrics["reward"] == pytest.approx(len(text) + 0.6)


def test_each_reward_is_wrapped_once_per_evaluation_not_per_batch(tmp_path, monkeypatch):
    from grpo_cli import scoring

    (tmp_path / "stub.py").write_text(STUB_REWARDS)
    entries = [RewardEntry(name=f"{tmp_path / 'stub.py'}:{name}") for name in ("length", "even_answer")]
    rewards = evaluate.Rewards(reward_binding.bind_all(entries[:1]), reward_binding.bind_all(entries[1:]))
    rows = [{"prompt": f"{a}+1=", "answer": str(a + 1)} for a in range(5)]
    samples = [[Sample(i, j, "12"[: j + 1], [0] * (j + 1), False) for j in range(3)] for i in range(5)]
    made = []
    init = scoring.RewardCall.__init__
    monkeypatch.setattr(
        scoring.RewardCall, "__init__", lambda self, bound: made.append(bound.name) or init(self, bound)
    )
    evaluate.score(samples, rows, rewards, chat=False, batch_size=4)  # 15 samples: 4 batches
    assert sorted(made) == sorted(rewards.names)
    assert [[s.scores["length"] for s in group] for group in samples] == [[1.0, 2.0, 2.0]] * 5
    assert [s.scores["even_answer"] for group in samples for s in group] == [
        float(int(r["answer"]) % 2 == 0) for r in rows for _ in range(3)
    ]


def test_batched_greedy_generation_equals_one_prompt_at_a_time():
    model, tokenizer = varied_model()
    prompts = ["1+2=", "12+7=", "3+45=", "9=", "100+200=", "5+5="]  # different lengths: left padding matters
    ids = prompting.tokenize_prompts(tokenizer, prompts)
    sampling = generation.Sampling(num_samples=1, max_new_tokens=5, seed=0)
    batched = generation.generate(model, tokenizer, ids, sampling, batch_size=6)
    single = generation.generate(model, tokenizer, ids, sampling, batch_size=1)
    assert [g[0].token_ids for g in batched] == [g[0].token_ids for g in single]
    assert len({g[0].text for g in batched}) > 1  # the prompts matter: not a constant output


def test_sampling_is_seeded():
    model, tokenizer = varied_model()
    ids = prompting.tokenize_prompts(tokenizer, ["1+2=", "3+4="])
    runs = [
        [
            s.text
            for g in generation.generate(model, tokenizer, ids, generation.Sampling(4, 4, seed), 3)
            for s in g
        ]
        for seed in (0, 0, 1)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_sampling_settings_come_from_the_trainer_section(workdir):
    recipe = load_recipe("recipe.yaml", ["trainer.temperature=0.5", "trainer.top_p=0.9"])
    sampling = generation.sampling_settings(recipe, 4)
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens) == (0.5, 0.9, 0, 3)
    assert not sampling.greedy
    ppo = load_recipe("recipe.yaml", ["algorithm=ppo", "trainer={}", "trainer.response_length=7"])
    assert (
        generation.sampling_settings(ppo, 2).max_new_tokens,
        generation.sampling_settings(ppo, 2).temperature,
    ) == (7, 0.7)


# ---- run directories (faked as training writes them) and the command ----


def fake_run(workdir: Path, name: str, kind: str) -> Path:
    """A run directory as `grpo-cli train` leaves it: base_model/, recipe.yaml, summary.json, and the tuned
    weights as a LoRA adapter (`kind="adapter"`) or a full model (`kind="full"`), moved well away from the base."""
    import torch
    from peft import get_peft_model

    recipe = load_recipe(workdir / "recipe.yaml")
    run = workdir / name
    model, tokenizer = models.build_from_config(recipe.model.from_config, recipe.seed)
    for directory in (run / "base_model", run):
        tokenizer.save_pretrained(directory)
    model.save_pretrained(run / "base_model")
    torch.manual_seed(1)
    if kind == "adapter":
        peft_model = get_peft_model(model, models.lora_config(LoraSection(r=4)))
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(std=2.0)
        peft_model.save_pretrained(run)
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(workdir / f"{name}-merged")
        tokenizer.save_pretrained(workdir / f"{name}-merged")
    else:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        model.save_pretrained(run)
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    (run / "summary.json").write_text(json.dumps({"algorithm": "grpo", "steps": 2, "last_reward": 0.5}))
    return run


def read_outputs(directory: Path) -> tuple[dict, list[dict]]:
    report = json.loads((directory / "eval.json").read_text())
    samples = [json.loads(line) for line in (directory / "eval_samples.jsonl").read_text().splitlines()]
    return report, samples


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_eval_run_with_baseline(workdir, runner, kind):
    run = fake_run(workdir, "run", kind)
    result = invoke(runner, "recipe.yaml", "--adapter", run, "--baseline", "-k", "2")
    assert result.exit_code == 0, result.output
    assert (
        "tuned" in result.stdout and "delta" in result.stdout and "rewards/accuracy/pass@2" in result.stdout
    )

    report, samples = read_outputs(run / "eval")
    tuned, base, delta = (report["metrics"][role] for role in ("tuned", "base", "delta"))
    assert set(tuned) == set(base) == set(delta)
    for key in tuned:
        assert delta[key] == pytest.approx(tuned[key] - base[key])

    expected_kind = "adapter" if kind == "adapter" else "model"
    assert report["models"]["tuned"]["kind"] == expected_kind
    assert report["models"]["tuned"]["path"] == str(run)
    assert report["models"]["tuned"]["run_summary"] == {"algorithm": "grpo", "steps": 2, "last_reward": 0.5}
    assert report["models"]["base"] == {"kind": "model", "path": str(run / "base_model")}
    if kind == "adapter":
        assert report["models"]["tuned"]["base"]["path"] == str(run / "base_model")
    settings = report["settings"]
    assert (settings["num_prompts"], settings["num_samples"], settings["decoding"]) == (6, 2, "sampling")
    assert settings["held_out"] == {"eval_size": 6}
    assert [r["name"] for r in settings["rewards"]] == ["accuracy", "length"]

    # Every prompt x sample x model, with scores that add up to the metrics.
    assert len(samples) == 2 * 6 * 2
    assert {s["model"] for s in samples} == {"tuned", "base"}
    for s in samples:
        assert s["rewards"]["length"] == len(s["completion"])
        # One token per character, plus the EOS and any other special token (not decoded); clipped at 3.
        assert len(s["completion"]) + (0 if s["clipped"] else 1) <= s["completion_length"] <= 3
        assert not s["clipped"] or s["completion_length"] == 3
        assert s["reward"] == pytest.approx(s["rewards"]["accuracy"] + 0.5 * s["rewards"]["length"])
        assert s["columns"]["answer"] == str(sum(map(int, s["prompt"].rstrip("=").split("+"))))
    for role, metrics in (("tuned", tuned), ("base", base)):
        mine = [s for s in samples if s["model"] == role]
        assert metrics["rewards/length"] == pytest.approx(
            sum(s["rewards"]["length"] for s in mine) / len(mine)
        )
        assert metrics["clipped_ratio"] == pytest.approx(sum(s["clipped"] for s in mine) / len(mine))
    assert [s["completion"] for s in samples if s["model"] == "tuned"] != [
        s["completion"] for s in samples if s["model"] == "base"
    ]


def test_a_run_of_the_wrong_kind_for_the_recipe_is_refused(workdir, cli):
    from tests.tiny_runs import fake_reward_run

    policy, reward = fake_run(workdir, "run", "adapter"), fake_reward_run(workdir)
    (reward / "eval").mkdir()
    (reward / "eval" / "eval.json").write_text("{}")  # the reward model's results: never touched
    result = cli("eval", "recipe.yaml", "--adapter", reward)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr == (
        f"error: --adapter {reward} is a reward-model run, but recipe.yaml (grpo) evaluates a policy; evaluate "
        f"the run with its own recipe: grpo-cli eval {reward / 'recipe.yaml'} --adapter {reward}\n"
    )
    assert (reward / "eval" / "eval.json").read_text() == "{}"
    result = cli("eval", "rm.yaml", "--adapter", policy)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "is a GRPO run (a policy), but rm.yaml (reward) evaluates a reward model" in result.stderr
    assert not (policy / "eval").exists()


def test_another_evaluations_results_are_replaced_only_with_overwrite(workdir, cli):
    from tests.tiny_runs import fake_reward_run

    reward = fake_reward_run(workdir)
    assert cli("eval", "rm.yaml", "--adapter", reward).exit_code == 0
    # The same evaluation again replaces its own results, and says so.
    again = cli("eval", "rm.yaml", "--adapter", reward)
    assert again.exit_code == 0 and "replacing this evaluation's previous results" in again.stderr
    pairs = (reward / "eval" / "eval.json").read_text()
    # A policy evaluated into the reward run's eval/ (by --model and --output-dir): refused, nothing written.
    policy = fake_run(workdir, "run", "full")
    out = reward / "eval"
    result = cli("eval", "recipe.yaml", "--model", policy, "--output-dir", out)
    assert result.exit_code == 2 and result.stderr == (
        f"error: {out / 'eval.json'} holds the results of another evaluation (of a reward model); keep both with "
        "--output-dir DIR, or replace them with --overwrite\n"
    )
    assert (reward / "eval" / "eval.json").read_text() == pairs
    # The same model under another recipe file (a pipeline's stage file, the run's own recipe.yaml) is this
    # evaluation again: its results give way, and the note names the recipe they were measured with.
    (workdir / "other.yaml").write_text((workdir / "recipe.yaml").read_text())
    assert cli("eval", "recipe.yaml", "--adapter", policy).exit_code == 0
    result = cli("eval", "other.yaml", "--adapter", policy)
    assert result.exit_code == 0 and f"measured with {workdir / 'recipe.yaml'}" in " ".join(
        result.stderr.split()
    )
    replaced = cli("eval", "recipe.yaml", "--model", policy, "--output-dir", out, "--overwrite")
    assert (
        replaced.exit_code == 0
        and "--overwrite: replacing the results of another evaluation" in replaced.stderr
    )
    assert json.loads((out / "eval.json").read_text())["settings"]["recipe"] == str(workdir / "recipe.yaml")


def test_adapter_eval_equals_the_merged_model_and_baseline_equals_the_base(workdir, runner):
    run = fake_run(workdir, "run", "adapter")
    assert invoke(runner, "recipe.yaml", "--adapter", run, "--baseline", "-k", "3", "-o", "a").exit_code == 0
    assert invoke(runner, "recipe.yaml", "--model", "run-merged", "-k", "3", "-o", "m").exit_code == 0
    assert invoke(runner, "recipe.yaml", "--model", run / "base_model", "-k", "3", "-o", "b").exit_code == 0
    (adapter_report, adapter_samples), (merged_report, merged_samples), (base_report, base_samples) = (
        read_outputs(workdir / d) for d in "amb"
    )

    def texts(samples, role):
        return [s["completion"] for s in samples if s["model"] == role]

    assert texts(adapter_samples, "tuned") == texts(merged_samples, "tuned")
    assert adapter_report["metrics"]["tuned"] == merged_report["metrics"]["tuned"]
    # --baseline draws with the same seeds as evaluating the base model on its own.
    assert texts(adapter_samples, "base") == texts(base_samples, "tuned")
    assert adapter_report["metrics"]["base"] == base_report["metrics"]["tuned"]


def test_eval_of_the_recipe_base_model_and_the_eval_section(workdir, runner):
    recipe = RECIPE + textwrap.dedent(
        """\
        eval:
          rewards:
            - name: ./stub_rewards.py:even_answer
          num_samples: 2
          limit: 4
        """
    )
    (workdir / "sub").mkdir()
    (workdir / "sub" / "stub_rewards.py").write_text(STUB_REWARDS)
    (workdir / "sub" / "recipe.yaml").write_text(recipe)
    result = invoke(runner, "sub/recipe.yaml")
    assert result.exit_code == 0, result.output
    assert "rewards/even_answer (eval only)" in result.stdout
    report, samples = read_outputs(workdir / "runs" / "eval-recipe")
    assert list(report["metrics"]) == ["base"]
    assert report["models"]["base"]["kind"] == "recipe"
    assert (report["settings"]["num_samples"], report["settings"]["num_prompts"]) == (2, 4)
    assert report["settings"]["eval_rewards"] == ["even_answer"]
    for s in samples:
        # The eval-only reward is scored but not part of the training total.
        assert s["rewards"]["even_answer"] == float(int(s["columns"]["answer"]) % 2 == 0)
        assert s["reward"] == pytest.approx(s["rewards"]["accuracy"] + 0.5 * s["rewards"]["length"])
    # The command line wins over the eval section.
    assert invoke(runner, "sub/recipe.yaml", "--limit", "1", "-k", "1").exit_code == 0
    report, samples = read_outputs(workdir / "runs" / "eval-recipe")
    assert (report["settings"]["num_prompts"], report["settings"]["decoding"], len(samples)) == (
        1,
        "greedy",
        1,
    )


def test_chat_prompts_use_the_template_and_hand_rewards_messages(workdir, runner):
    model, tokenizer = models.build_from_config(tiny_spec(), seed=0)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}=={% endif %}"
    )
    model.save_pretrained(workdir / "chat-model")
    tokenizer.save_pretrained(workdir / "chat-model")
    (workdir / "recipe.yaml").write_text(
        RECIPE.replace('prompt: "{question}"', 'prompt: "{question}"\n  system_prompt: "+"').replace(
            "- name: accuracy", "- name: ./stub_rewards.py:is_chat"
        )
    )
    result = invoke(runner, "recipe.yaml", "--model", "chat-model", "--limit", "2")
    assert result.exit_code == 0, result.output
    report, samples = read_outputs(workdir / "runs" / "eval-recipe")
    assert report["settings"]["chat"] is True
    assert report["metrics"]["tuned"]["rewards/is_chat"] == 1.0
    assert samples[0]["prompt"][0] == {"role": "system", "content": "+"}
    question = samples[0]["columns"]["question"]
    (ids,) = prompting.tokenize_prompts(tokenizer, [samples[0]["prompt"]])
    assert tokenizer.decode(ids) == f"+{question}=="  # the template, with its generation prompt


# ---- mistakes: one line, exit code 2 ----


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset.eval_size=null"], "set dataset.eval_split"),
        (["--adapter", "nowhere"], "--adapter nowhere: no such directory"),
        (
            ["--adapter", "empty"],
            "holds neither a peft adapter (adapter_config.json) nor a model (config.json)",
        ),
        (["--adapter", "unfinished"], "evaluate its last checkpoint with --adapter unfinished/checkpoint-4"),
        (["--model", "empty"], "has no config.json"),
        (["--adapter", "empty", "--model", "empty"], "give one"),
        (["--baseline"], "--baseline compares a tuned model with its base"),
        (["trainer.max_stepz=3"], "did you mean 'max_steps'"),
        (["trainer"], "bad override 'trainer'"),
        (["eval.rewards=[{name: accuracy}]"], "eval.rewards[0] (accuracy) is already a training reward"),
        (["eval.rewards=[{name: acuracy}]"], "unknown reward 'acuracy'"),
    ],
)
def test_user_errors(workdir, runner, args, message):
    (workdir / "empty").mkdir()
    (workdir / "unfinished" / "checkpoint-4").mkdir(parents=True)
    result = invoke(runner, "recipe.yaml", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_model_path_holding_an_adapter_says_to_use_adapter(workdir, runner):
    (workdir / "lora").mkdir()
    (workdir / "lora" / "adapter_config.json").write_text("{}")
    result = invoke(runner, "recipe.yaml", "--model", "lora")
    assert result.exit_code == 2
    assert "pass it as --adapter lora" in result.stderr


def test_eval_command_imports_no_heavy_library():
    code = (
        "import sys, grpo_cli.commands.eval, grpo_cli.workflows.evaluate_generations; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bind_rewards_loads_reward_models(workdir, reward_model_dir):
    """Reward models are scored in eval as in training (issue 14), not skipped: see also test_scoring.py."""
    from grpo_cli.reward_models import RewardModelScore

    recipe = load_recipe("recipe.yaml")
    recipe.rewards.append(RewardEntry(name=f"model:{reward_model_dir}"))
    rewards = evaluate.bind_rewards(recipe)
    assert rewards.names == ["accuracy", "length", "judge"]
    assert isinstance(rewards.training[-1].fn, RewardModelScore)


def test_user_error_type_for_missing_held_out(workdir):
    recipe = load_recipe("recipe.yaml", ["dataset.eval_size=null"])
    with pytest.raises(UserError, match="eval_ratio"):
        evaluate.held_out_rows(recipe, None)


# ---- real training runs ----


def train(runner: CliRunner, workdir: Path, output: str, *overrides: str) -> Path:
    from grpo_cli.cli import app as main_app

    result = runner.invoke(main_app, ["train", "recipe.yaml", *overrides, "--output-dir", output])
    assert result.exit_code == 0, result.output
    return workdir / output


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [(), ("lora.r=4",)], ids=["full", "lora"])
def test_eval_of_a_trained_grpo_run(workdir, runner, overrides):
    run = train(runner, workdir, "runs/trained", *overrides)
    assert (run / ("adapter_config.json" if overrides else "config.json")).is_file()
    result = invoke(runner, "recipe.yaml", "--adapter", run, "--baseline", "-k", "2")
    assert result.exit_code == 0, result.output
    report, samples = read_outputs(run / "eval")
    assert report["models"]["tuned"]["kind"] == ("adapter" if overrides else "model")
    assert report["models"]["tuned"]["run_summary"]["steps"] == 2
    assert report["models"]["base"]["path"] == str(run / "base_model")
    assert len(samples) == 2 * 6 * 2
    for key, value in report["metrics"]["delta"].items():
        assert value == pytest.approx(report["metrics"]["tuned"][key] - report["metrics"]["base"][key])


def test_pipeline_says_fresh_score_head_only_when_the_head_is_new(tmp_path):
    from grpo_cli.commands.eval import started_from
    from tests.tiny_runs import bpe_model, reward_recipe

    recipe = load_recipe(reward_recipe(tmp_path))  # from a local one-label reward model: its head loads
    assert started_from(recipe) == str(tmp_path / "judge")
    policy = bpe_model(tmp_path / "policy")  # a causal LM: a new head
    fresh = recipe.model_copy(update={"model": recipe.model.model_copy(update={"name_or_path": str(policy)})})
    assert started_from(fresh) == f"{policy}, fresh score head"
    hub = recipe.model_copy(
        update={"model": recipe.model.model_copy(update={"name_or_path": "no-org/no-model"})}
    )
    assert started_from(hub) == "no-org/no-model, fresh score head"
