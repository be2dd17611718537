"""`grpo-cli export`: merged and adapter-only exports of LoRA and fully fine-tuned runs and checkpoints, what loads
them (transformers alone; peft for an adapter), what they generate (the same as the run in `eval`), and the care
taken with the output directory. The fast tests export runs made without training (tests/tiny_runs.py); the slow
ones train GRPO (LoRA, on a locally saved model with a BPE tokenizer and a chat template), full fine-tuning and PPO
runs for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_cli import model_sources, models
from grpo_cli.recipe import load_recipe
from grpo_cli.workflows.export import MARKER
from tests.helpers import PPO_RECIPE, eval_completions, held_out_prompt_ids
from tests.tiny_runs import CHAT_TEMPLATE, bpe_model, fake_reward_run, fake_run, reward_recipe


def plain_completions(directory: Path, prompt_ids: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy completions with transformers alone and the export's own generation config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    texts = []
    for ids in prompt_ids:
        with torch.inference_mode():
            output = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new_tokens)
        texts.append(tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True))
    return texts


def export_ok(cli, *args) -> str:
    result = cli("export", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def check_standalone(run: Path, exported: Path, max_new_tokens: int = 2, varied: bool = True) -> None:
    """The export loads with AutoModelForCausalLM, completes the held-out prompts as the run does in eval, and
    keeps the run's chat template and EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not (exported / "adapter_config.json").exists()
    assert type(AutoModelForCausalLM.from_pretrained(exported)).__name__ == "Qwen2ForCausalLM"
    expected, prompt_ids = eval_completions(run)
    assert plain_completions(exported, prompt_ids, max_new_tokens) == expected
    assert (
        len(set(expected)) > 1 or not varied
    )  # a test of something: the fake runs answer prompts differently
    mine, theirs = AutoTokenizer.from_pretrained(run), AutoTokenizer.from_pretrained(exported)
    assert (theirs.chat_template, theirs.eos_token, theirs.pad_token) == (
        mine.chat_template,
        mine.eos_token,
        mine.pad_token,
    )
    assert json.loads((exported / "config.json").read_text())["use_cache"] is True
    generation = json.loads((exported / "generation_config.json").read_text())
    assert mine.eos_token_id in (
        generation["eos_token_id"]
        if isinstance(generation["eos_token_id"], list)
        else [generation["eos_token_id"]]
    )


# ---- fast: runs made without training ----


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE], ids=["text", "chat"])
def test_merged_export_of_a_lora_run(cli, tmp_path, template):
    run = fake_run(tmp_path, chat_template=template)
    out = tmp_path / "exported"
    stdout = export_ok(cli, run, "-o", out)
    assert "exported the LoRA adapter merged into its base (float32)" in stdout
    assert "logits match the adapter on its base on 4 prompts" in stdout
    check_standalone(run, out)
    marker = json.loads((out / MARKER).read_text())
    assert (marker["kind"], marker["source"], marker["check"]["ok"]) == ("merged", str(run.resolve()), True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "run", "tiny.yaml"]  # no staging left
    assert all(p.stat().st_mode & 0o044 for p in out.iterdir())  # readable by others, weights included


def test_full_fine_tuning_export(cli, tmp_path):
    run = fake_run(tmp_path, lora=False)
    stdout = export_ok(cli, run, "-o", tmp_path / "exported")
    assert "exported the fully fine-tuned model (float32)" in stdout and "match the run's model" in stdout
    check_standalone(run, tmp_path / "exported")


def test_checkpoint_export_uses_the_runs_base(cli, tmp_path):
    run = fake_run(tmp_path)
    export_ok(cli, run / "checkpoint-2", "-o", tmp_path / "exported")
    check_standalone(run / "checkpoint-2", tmp_path / "exported")
    readme = (tmp_path / "exported" / "README.md").read_text()
    assert "This is the run's `checkpoint-2`" in readme


def test_dtype(cli, tmp_path):
    from transformers import AutoModelForCausalLM

    run = fake_run(tmp_path)
    stdout = export_ok(cli, run, "-o", tmp_path / "bf16", "--dtype", "bfloat16")
    assert "(bfloat16)" in stdout
    check = json.loads((tmp_path / "bf16" / MARKER).read_text())["check"]
    assert check["ok"] and 0 < check["max_abs_logit_diff"] <= check["tolerance"]  # bf16 rounds, within 10%
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert str(next(model.parameters()).dtype) == "torch.bfloat16"


def test_adapter_only_loads_with_peft_on_its_base_after_the_folder_moves(cli, tmp_path):
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = fake_run(tmp_path)
    out = tmp_path / "adapter"
    stdout = export_ok(cli, run, "-o", out, "--adapter-only")
    assert "exported the LoRA adapter alone" in stdout
    config = json.loads((out / "adapter_config.json").read_text())
    # A model built from a config: its initial weights travel with the adapter, named relative to the export.
    assert config["base_model_name_or_path"] == "./base_model"
    assert str(tmp_path) not in (out / "adapter_config.json").read_text() + (out / "README.md").read_text()
    assert not (out / "model.safetensors").exists()
    moved = Path(shutil.move(out, tmp_path / "elsewhere" / "adapter"))
    assert cli("generate", moved, "-p", "1+2=").exit_code == 0  # grpo-cli finds the base inside it too
    base = AutoModelForCausalLM.from_pretrained(moved / config["base_model_name_or_path"])
    exported = PeftModel.from_pretrained(base, moved).eval()
    recipe = load_recipe(run / "recipe.yaml")
    tuned, _ = model_sources.resolve_models(recipe, adapter=run, model=None)
    merged, tokenizer = models.load_source(tuned, recipe)
    ids = torch.tensor([held_out_prompt_ids(run, tokenizer)[0]])
    with torch.inference_mode():
        assert torch.allclose(exported(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
        assert torch.equal(
            exported.generate(ids, do_sample=False, max_new_tokens=2),
            merged.generate(ids, do_sample=False, max_new_tokens=2),
        )


def test_adapter_only_of_a_hub_base_names_the_hub_id(tmp_path, monkeypatch):
    from grpo_cli.model_sources import ModelSource
    from grpo_cli.recipe import ModelSection
    from grpo_cli.workflows import export

    source = export.Source(
        path=tmp_path,
        run_dir=tmp_path,
        recipe=None,
        tuned=ModelSource(
            "adapter", base=ModelSource("recipe", spec=ModelSection(name_or_path="Qwen/Qwen2.5-0.5B"))
        ),
    )
    assert export._portable_base(source, tmp_path, []) == "Qwen/Qwen2.5-0.5B"
    assert not (tmp_path / "base_model").exists()


def test_adapter_only_of_a_full_run_is_refused(cli, tmp_path):
    run = fake_run(tmp_path, lora=False)
    result = cli("export", run, "-o", tmp_path / "out", "--adapter-only")
    assert result.exit_code == 2 and "holds a fully fine-tuned model, not a LoRA adapter" in result.stderr


def test_refuses_to_overwrite_and_never_deletes_what_is_not_an_export(cli, tmp_path):
    run = fake_run(tmp_path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for args in ([], ["--overwrite"]):
        result = cli("export", run, "-o", other, *args)
        assert result.exit_code == 2
        assert "is not empty and holds no grpo-cli export" in result.stderr
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    out = tmp_path / "exported"
    export_ok(cli, run, "-o", out)
    result = cli("export", run, "-o", out)
    assert result.exit_code == 2 and "already holds an export; pass --overwrite" in result.stderr
    (out / "stale.txt").write_text("from the old export")
    stdout = export_ok(cli, run, "-o", out, "--overwrite", "--adapter-only")
    assert "adapter alone" in stdout
    assert not (out / "stale.txt").exists() and (out / "adapter_config.json").is_file()

    for target in (run, tmp_path):  # the run itself, or a directory holding it
        result = cli("export", run, "-o", target, "--overwrite")
        assert result.exit_code == 2 and "holds the run being exported" in result.stderr
    assert (run / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere", "-o", "out"], "nowhere: no such directory"),
        (["empty", "-o", "out"], "is not a grpo-cli run"),
        (["run", "-o", "out", "--dtype", "int8"], "--dtype int8: give one of float32, bfloat16, float16"),
        (["run", "-o", "run/recipe.yaml"], "is a file, not a directory"),
        (
            ["unfinished", "-o", "out"],
            "is the run unfinished? export its last checkpoint: unfinished/checkpoint-4",
        ),
    ],
)
def test_user_errors(cli, tmp_path, monkeypatch, args, message):
    fake_run(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "unfinished" / "recipe.yaml").write_text((tmp_path / "run" / "recipe.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    result = cli("export", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_export_command_imports_no_heavy_library():
    code = "import sys, grpo_cli.cli; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- slow: real training runs ----


def run_scores(run: Path) -> tuple[list[float], list[list[int]]]:
    """The reward run's scores, as `eval` and a `model:` reward load it, for a few texts of its pairs."""
    from grpo_cli import prompting
    from grpo_cli.reward_models import tokenize_pairs
    from grpo_cli.workflows.evaluate_generations import held_out_rows

    recipe = load_recipe(run / "recipe.yaml")
    model, tokenizer = models.load_reward_model(run, None)
    rows = prompting.prepare_preferences(held_out_rows(recipe, 3), recipe.dataset, tokenizer)
    pairs = tokenize_pairs(rows, tokenizer)
    ids = [x for pair in zip(pairs["chosen_ids"], pairs["rejected_ids"], strict=True) for x in pair]
    return plain_scores(model, ids), ids


def plain_scores(model, ids: list[list[int]]) -> list[float]:
    import torch

    with torch.inference_mode():
        return [float(model(input_ids=torch.tensor([x])).logits[0, 0]) for x in ids]


def check_reward_export(run: Path, exported: Path) -> None:
    """A merged reward export: AutoModelForSequenceClassification alone, no arguments, one label, a pad id, the
    run's scores; and its card says text-classification."""
    from pytest import approx
    from transformers import AutoModelForSequenceClassification

    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    assert len(config["id2label"]) == 1 and config["pad_token_id"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(exported)
    expected, ids = run_scores(run)
    assert len(set(expected)) > 1
    assert plain_scores(model, ids) == approx(expected, abs=1e-4)
    assert front_matter(exported / "README.md")["pipeline_tag"] == "text-classification"
    assert json.loads((exported / MARKER).read_text())["check"]["measure"] == "scores"


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_reward_run_exports_a_sequence_classifier_that_scores_like_the_run(cli, tmp_path, lora):
    run = fake_reward_run(tmp_path, lora=lora)
    stdout = export_ok(cli, run, "-o", tmp_path / "exported")
    assert "check: the exported reward model's scores match" in stdout
    check_reward_export(run, tmp_path / "exported")


def test_reward_export_refuses_to_write_when_the_scores_differ(cli, tmp_path, monkeypatch):
    from grpo_cli.workflows import export_reward

    run = fake_reward_run(tmp_path)
    real = export_reward.scores
    calls = []

    def off_on_the_way_back(model, texts):
        calls.append(1)
        return [s + (0.5 if len(calls) > 1 else 0) for s in real(model, texts)]

    monkeypatch.setattr(export_reward, "scores", off_on_the_way_back)
    result = cli("export", run, "-o", tmp_path / "exported")
    assert result.exit_code == 2 and "scores differ from the run's" in result.stderr
    assert not (tmp_path / "exported").exists()


def test_reward_adapter_only_keeps_its_score_head_and_loads_on_its_base(cli, tmp_path):
    import shutil

    from peft import PeftModel
    from pytest import approx
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    run = fake_reward_run(tmp_path)
    out = tmp_path / "adapter"
    export_ok(cli, run, "-o", out, "--adapter-only")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert any("score" in name for name in load_file(out / "adapter_model.safetensors"))
    moved = Path(shutil.move(out, tmp_path / "elsewhere" / "adapter"))
    base = AutoModelForSequenceClassification.from_pretrained(moved / config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, moved)
    expected, ids = run_scores(run)
    assert plain_scores(model, ids) == approx(expected, abs=1e-4)


def train(cli, recipe: Path, out: Path, *overrides: str) -> Path:
    result = cli("train", recipe, *overrides, "--output-dir", out)
    assert result.exit_code == 0, result.output
    return out


def front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.slow
def test_grpo_lora_run_of_a_local_bpe_chat_model(cli, tmp_path, tiny_recipe):
    base = bpe_model(tmp_path / "bpe-base")
    recipe = tiny_recipe({"model": {"from_config": None, "name_or_path": str(base)}})
    run = train(cli, recipe, tmp_path / "run", "trainer.max_completion_length=4")
    assert front_matter(run / "README.md")["library_name"] == "peft"
    out = tmp_path / "exported"
    export_ok(cli, run, "-o", out)
    check_standalone(run, out, max_new_tokens=4, varied=False)
    # Transformers alone, in a fresh interpreter that never imports peft or grpo_cli.
    code = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}); t = AutoTokenizer.from_pretrained({str(out)!r});"
        "assert 'peft' not in sys.modules and 'grpo_cli' not in sys.modules; print(type(m).__name__, t.eos_token)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Qwen2ForCausalLM", "<|im_end|>"]


@pytest.mark.slow
def test_full_fine_tuning_run(cli, tmp_path, tiny_recipe):
    run = train(cli, tiny_recipe({"lora": None}), tmp_path / "run", "trainer.learning_rate=0.01")
    assert front_matter(run / "README.md")["library_name"] == "transformers"
    export_ok(cli, run, "-o", tmp_path / "exported")
    check_standalone(run, tmp_path / "exported", varied=False)


@pytest.mark.slow
def test_ppo_run(cli, tmp_path):
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(yaml.safe_dump(PPO_RECIPE, sort_keys=False))
    run = train(cli, recipe, tmp_path / "run")
    assert "PPO" in (run / "README.md").read_text()
    export_ok(cli, run, "-o", tmp_path / "exported")
    check_standalone(run, tmp_path / "exported", varied=False)
    export_ok(cli, run / "checkpoint-2", "-o", tmp_path / "adapter", "--adapter-only")


@pytest.mark.parametrize("local", [False, True])
def test_check_prompts_are_the_first_rows_prepared_as_in_training_without_splitting(
    tmp_path, tiny_recipe, monkeypatch, local
):
    from grpo_cli import data, tasks
    from grpo_cli.workflows import export

    rows = tasks.TASKS["addition"](size=export.CHECK_PROMPTS, seed=0)
    changes = {}
    if local:
        path = tmp_path / "d.jsonl"
        more = tasks.TASKS["addition"](size=20, seed=1)
        path.write_text("".join(json.dumps(r) + "\n" for r in more))
        rows, changes = more, {"dataset": {"generate": None, "source": str(path)}}
    recipe = load_recipe(tiny_recipe(changes))
    monkeypatch.setattr(data, "hold_out", lambda *a: pytest.fail("the dataset was split"))
    tokenizer = models.char_tokenizer("0123456789+=")
    ids = export.check_prompts(recipe, tokenizer)
    expected = [r["question"] for r in rows[: export.CHECK_PROMPTS]]
    assert [tokenizer.decode(row, skip_special_tokens=True) for row in ids] == expected


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_trained_reward_run_of_a_local_one_label_model(cli, tmp_path, lora):
    run = train(cli, reward_recipe(tmp_path, lora=lora), tmp_path / "rm")
    export_ok(cli, run, "-o", tmp_path / "exported")
    check_reward_export(run, tmp_path / "exported")
    if lora:
        export_ok(cli, run, "-o", tmp_path / "adapter", "--adapter-only")
