"""A model card (`README.md`) for a run directory, written by `train`, and for an export, written by `export`.

It is the Hub's model-card format: YAML front matter (base_model, library_name, tags, pipeline_tag) and markdown
saying what the model is (algorithm, base model, LoRA settings), what it was trained on (dataset, rewards with
weights), how training went (summary.json), how it scored (the latest RUN/eval/eval.json), the reward curve
(RUN/report/reward.png from `grpo-cli report`) and how to load and upload it.

Everything is read from the run's files (recipe.yaml, summary.json, eval/eval.json), never from a live trainer,
so the card can be written again at any time from what is on disk. `base_model` goes into the front matter only
when it is a Hub id: the Hub rejects a README whose base_model is not a model on the Hub (a local path, a model
built from a config); the text names such a base instead.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grpo_cli import __version__, manifest
from grpo_cli.algorithms.table import ALGORITHMS
from grpo_cli.errors import UserError
from grpo_cli.eval_markdown import eval_markdown
from grpo_cli.model_sources import HUB_ID, run_root
from grpo_cli.output import warn_once
from grpo_cli.run_files import (
    atomic_write,
    card_is_ours,
    read_eval_report,
    read_marker,
    read_recipe,
    read_summary,
    record_card,
    run_algorithm,
)

LOCAL_BASE = "./base_model"  # an adapter export's base when it was local: copied into the export (`export`)

REWARD_PLOT = Path("report") / "reward.png"  # where `grpo-cli report RUN` draws the reward curve


def write_run_card(run_dir: Path) -> Path:
    """RUN/README.md for a training run (the adapter or model in the run directory itself)."""
    kind = "adapter" if (run_dir / "adapter_config.json").is_file() else "full"
    text = render(
        run_dir,
        run_dir,
        kind=kind,
        plot=REWARD_PLOT if (run_dir / REWARD_PLOT).is_file() else None,
        chat_template=_has_chat_template(run_dir),
    )
    path = run_dir / "README.md"
    if not card_is_ours(run_dir):
        warn_once(f"{path} was edited by hand: left as it is, without this run's model card")
        return path
    atomic_write(path, text)
    record_card(run_dir)
    return path


def write_export_card(directory: Path, source: Path, *, kind: str, base: str | None = None) -> Path:
    """README.md for an export of `source` (a run or checkpoint) into `directory`; the reward curve is copied in."""
    run_dir = run_root(source)
    plot = None
    if (run_dir / REWARD_PLOT).is_file():
        plot = Path("reward.png")
        shutil.copy2(run_dir / REWARD_PLOT, directory / plot)
    text = render(
        run_dir,
        source,
        kind=kind,
        plot=plot,
        adapter_base=base,
        exported=True,
        chat_template=_has_chat_template(directory),
    )
    path = directory / "README.md"
    atomic_write(path, text)
    return path


def hub_id(name: str | None) -> str | None:
    """`name` when it looks like a Hub model id rather than a local path."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    return name if HUB_ID.match(name) else None


def render(
    run_dir: Path,
    source: Path,
    *,
    kind: str,
    plot: Path | None = None,
    adapter_base: str | None = None,
    exported: bool = False,
    chat_template: bool = False,
) -> str:
    """The card's text. `kind`: "adapter" (a peft adapter), "merged" (adapter merged into its base) or "full";
    `chat_template`: whether the model's tokenizer has one (its usage snippet then applies it, as eval did)."""
    recipe = read_recipe(run_dir) or {}
    summary = read_summary(run_dir) or {}
    try:
        evaluation = read_eval_report(run_dir)
    except (
        UserError
    ) as err:  # the card is written after training: a damaged eval result must not fail the run
        warn_once(f"{err}; the model card leaves its eval results out")
        evaluation = None
    algorithm = run_algorithm(run_dir) or "grpo"
    model = recipe.get("model") or {}
    lora = recipe.get("lora")
    base_name = model.get("name_or_path")
    name = f"{run_dir.name}-{source.name}" if source.name.startswith("checkpoint-") else source.name

    front: dict[str, Any] = {}
    if hub_id(base_name):
        front["base_model"] = base_name
    front["library_name"] = "peft" if kind == "adapter" else "transformers"
    spec = ALGORITHMS.get(algorithm)
    tags = ["grpo-cli", "trl", *(spec.card_tags if spec else [algorithm])]
    if lora:
        tags.append("lora")
    if kind == "adapter":
        tags.append("peft")
    front["tags"] = tags
    front["pipeline_tag"] = spec.pipeline_tag if spec else "text-generation"

    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    lines += _what_it_is(algorithm, model, lora, kind, source, exported, adapter_base)
    lines += _data_and_rewards(recipe)
    lines += _training(summary, recipe, source)
    if evaluation:
        lines += eval_markdown(evaluation, "## Evaluation")
    if plot is not None:
        lines += ["## Reward during training", "", f"![mean reward per step]({plot.as_posix()})", ""]
    dataset = recipe.get("dataset") or {}
    chat = chat_template if dataset.get("chat_template") is None else bool(dataset["chat_template"])
    usage = Usage(kind, adapter_base or base_name, exported, run_dir, chat, dataset.get("system_prompt"))
    if spec is not None and spec.makes == "reward model":
        lines += usage.reward_model()
    else:
        lines += usage.policy()
    lines += manifest.markdown((read_marker(run_dir) or {}).get("manifest"))
    lines += ["## Upload to the Hugging Face Hub", ""]
    if not exported:
        lines += [
            f"Export first (`grpo-cli export {run_dir} -o EXPORTED_DIR`): a run directory also holds "
            "checkpoints and logs.",
            "",
        ]
    lines += [
        "With the Hub's own CLI (`pip install -U huggingface_hub`):",
        "",
        "```bash",
        "hf auth login",
        f"hf upload YOUR_NAME/{name} {'.' if exported else 'EXPORTED_DIR'}",
        "```",
        "",
    ]
    lines += [f"Written by grpo-cli {__version__}.", ""]
    return "\n".join(lines)


def shown(path, exported: bool) -> str:
    """A local path as its reader types it: relative to the current directory inside it; else in an export, its name."""
    path = Path(path)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd())) or "."
    return path.name if exported and path.is_absolute() else str(path)


def _base_description(model: dict, standalone: bool, exported: bool, adapter_base: str | None) -> str:
    if model.get("from_config"):
        spec = model["from_config"]
        holder = "this folder" if exported else "the run"
        where = "" if standalone else f"; its initial weights are in {holder}'s `base_model/`"
        return (
            f"a randomly initialised `{spec.get('model_type')}` built from a config (hidden size "
            f"{spec.get('hidden_size')}, layers: {spec.get('num_hidden_layers')}, a character-level tokenizer over "
            f"`{spec.get('vocabulary')}`){where}"
        )
    if model.get("run"):
        run = Path(model["run"])
        algorithm = run_algorithm(run) if run.is_dir() else None
        what = f"the {algorithm.upper()} run" if algorithm else "the run"
        return f"{what} `{shown(run, exported)}` (the model it trained)"
    name = model.get("name_or_path")
    if not name:
        return "a model its recipe.yaml does not name"
    if hub_id(name):
        return f"[{name}](https://huggingface.co/{name})"
    inside = "; copied into this folder's `base_model/`" if adapter_base == LOCAL_BASE else ""
    return f"`{shown(name, exported)}` (a local directory{inside})"


def _what_it_is(algorithm, model, lora, kind, source, exported, adapter_base) -> list[str]:
    what = {
        "adapter": "a LoRA adapter",
        "merged": "a standalone model (the LoRA adapter merged into its base)",
        "full": "a fully fine-tuned model",
    }[kind]
    base = _base_description(model, exported and kind != "adapter", exported, adapter_base)
    if algorithm in ALGORITHMS and ALGORITHMS[algorithm].makes == "reward model":
        first = (
            f"A reward model ({what}): a one-label sequence classifier that scores a prompt and its answer, "
            f"trained with TRL's RewardTrainer on preference pairs (chosen vs rejected) by grpo-cli, from {base}."
        )
    else:
        first = f"{what[0].upper() + what[1:]} trained with {algorithm.upper()} by grpo-cli (on TRL), from {base}."
    lines = [first, ""]
    if source.name.startswith("checkpoint-"):
        lines += [f"This is the run's `{source.name}`, saved during training.", ""]
    if lora:
        targets = lora.get("target_modules")
        targets = ", ".join(targets) if isinstance(targets, list) else targets
        lines += [
            f"- LoRA: r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
            f"target modules: {targets}",
        ]
    else:
        lines += ["- Full fine-tuning (no LoRA)"]
    lines += [
        f"- Algorithm: {algorithm.upper()} ({ALGORITHMS[algorithm].trainer if algorithm in ALGORITHMS else 'TRL'})",
        "",
    ]
    return lines


def _data_and_rewards(recipe: dict) -> list[str]:
    dataset = recipe.get("dataset") or {}
    if dataset.get("generate"):
        gen = dataset["generate"]
        where = f"the `{gen.get('task')}` task generated in code ({gen.get('size')} rows, options {gen.get('options') or {}})"
    else:
        where = f"`{_file_name(dataset.get('source'))}`" + (
            f" (config `{dataset['config']}`)" if dataset.get("config") else ""
        )
        where += f", split `{dataset.get('split', 'train')}`"
    held = {k: dataset[k] for k in ("eval_split", "eval_ratio", "eval_size") if dataset.get(k) is not None}
    if "eval_split" in held:
        held["eval_split"] = _file_name(held["eval_split"])
    lines = ["## Data and rewards", "", f"- Dataset: {where}"]
    if dataset.get("prompt"):
        lines.append(f"- Prompt template: `{dataset['prompt']}`")
    if dataset.get("system_prompt"):
        lines.append(f"- System prompt: `{dataset['system_prompt']}`")
    if held:
        lines.append("- Held out for eval: " + ", ".join(f"{k}={v}" for k, v in held.items()))
    rewards = recipe.get("rewards") or []
    lines += ["", "| reward | weight | args |", "|---|---|---|"] if rewards else []
    for entry in rewards:
        args = json.dumps(entry.get("args") or {}) if entry.get("args") else ""
        lines.append(f"| `{_reward_name(entry.get('name'))}` | {entry.get('weight', 1.0):g} | {args} |")
    lines.append("")
    return lines


def _file_name(value):
    """A local (absolute, resolved by the recipe) file or directory by its name; a Hub id or split as it is."""
    return Path(value).name if isinstance(value, str) and Path(value).is_absolute() else value


def _reward_name(name) -> str:
    """A reward as the card shows it: a reward model's or a reward file's local path by its name alone."""
    name = str(name)
    if name.startswith("model:"):
        return "model:" + str(_file_name(name.removeprefix("model:")))
    path, colon, function = name.rpartition(":")
    if colon and Path(path).is_absolute():
        return f"{Path(path).name}:{function}"
    return str(_file_name(name))


def _training(summary: dict, recipe: dict, source: Path) -> list[str]:
    lines = ["## Training", ""]
    if summary:
        first, last = summary.get("first_reward"), summary.get("last_reward")
        lines.append(f"- Steps: {summary.get('steps')}, wall time {_duration(summary.get('wall_time_s'))}")
        if first is not None and last is not None:
            lines.append(f"- Mean reward: {first:.3f} (first step) -> {last:.3f} (last step)")
        means = {k: v for k, v in summary.items() if k.endswith("_steps_mean_reward") and v is not None}
        if means:
            lines.append("- " + ", ".join(f"{k.replace('_', ' ')}: {v:.3f}" for k, v in means.items()))
        if summary.get("trainable_parameters"):
            lines.append(f"- Trainable parameters: {summary['trainable_parameters']:,}")
    else:
        lines.append("- No summary.json: the run did not finish.")
    trainer = recipe.get("trainer") or {}
    if trainer:
        lines.append("- Trainer settings: " + ", ".join(f"`{k}={v}`" for k, v in trainer.items()))
    lines += [f"- Seed: {recipe.get('seed')}", ""]
    return lines


def _duration(seconds) -> str:
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _has_chat_template(directory: Path) -> bool:
    """Whether the tokenizer saved in `directory` has a chat template (beside its settings, or inside them)."""
    if any((directory / name).exists() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    try:
        settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and bool(settings.get("chat_template"))


@dataclass
class Usage:
    """The card's "How to use it": the model loaded, and its input prepared, as `eval` did (a chat template)."""

    kind: str  # "adapter", "merged" or "full"
    base: str | None  # an adapter's base: its adapter_config.json's (an export's), else the recipe's model
    exported: bool
    run_dir: Path
    chat: bool
    system_prompt: str | None

    @property
    def here(self) -> str:
        return "." if self.exported else str(self.run_dir)

    def _messages(self, answer: bool) -> list[str]:
        system = (
            [f'{{"role": "system", "content": {json.dumps(self.system_prompt)}}}']
            if self.system_prompt
            else []
        )
        turns = [*system, '{"role": "user", "content": "YOUR PROMPT"}']
        turns += ['{"role": "assistant", "content": "AN ANSWER"}'] if answer else []
        return ["messages = [", *(f"    {turn}," for turn in turns), "]"]

    def _load(self, auto_class: str, extra: str = "") -> list[str]:
        if self.kind in ("merged", "full"):
            return [
                f"from transformers import {auto_class}, AutoTokenizer",
                "",
                f'model = {auto_class}.from_pretrained("{self.here}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{self.here}")',
            ]
        base = self.base or f"{self.run_dir}/base_model"
        return [
            "from peft import PeftModel",
            f"from transformers import {auto_class}, AutoTokenizer",
            "",
            f'base = {auto_class}.from_pretrained("{base}"{extra})',
            f'model = PeftModel.from_pretrained(base, "{self.here}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{self.here}")',
        ]

    def _intro(self, what: str) -> list[str]:
        lines = ["## How to use it", ""]
        if self.base == LOCAL_BASE:
            lines += [
                "The base model is in `base_model/` in this folder (`adapter_config.json` names it "
                f"`{LOCAL_BASE}`): run this from the folder, or give the path of its `base_model/`.",
                "",
            ]
        return [*lines, what, "", "```python"]

    def policy(self) -> list[str]:
        here = self.here
        merged = self.kind in ("merged", "full")
        lines = self._intro("With transformers alone:" if merged else "With peft, on its base model:")
        lines += self._load("AutoModelForCausalLM")
        if self.chat:  # as eval prompted it: the chat template, ending where the assistant's turn begins
            lines += [
                *self._messages(answer=False),
                "inputs = tokenizer.apply_chat_template(",
                '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
                ")",
            ]
        else:
            lines.append('inputs = tokenizer("YOUR PROMPT", return_tensors="pt")')
        lines += [
            "output = model.generate(**inputs)  # stops at the EOS used in training (generation_config.json)",
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
            "```",
            "",
        ]
        if merged:
            lines += [f'With vLLM: `vllm serve {here}`, or `LLM(model="{here}")` in Python.', ""]
        else:
            lines += [f"With vLLM: `vllm serve {self.base} --enable-lora --lora-modules tuned={here}`.", ""]
            if not self.exported:
                lines += [
                    f"For a standalone model (no peft needed): `grpo-cli export {self.run_dir} -o EXPORTED_DIR`.",
                    "",
                ]
        return [
            *lines,
            "With grpo-cli, prompts prepared and decoded as in `eval`:",
            "",
            "```bash",
            f'grpo-cli generate {here} --prompt "YOUR PROMPT"',
            "```",
            "",
        ]

    def reward_model(self) -> list[str]:
        merged = self.kind in ("merged", "full")
        what = (
            "With transformers alone"
            if merged
            else "With peft, on its base model (its score head is in the adapter)"
        )
        lines = self._intro(f"{what}: a higher score means a better answer.")
        lines += self._load("AutoModelForSequenceClassification", extra=", num_labels=1")
        if not merged:
            lines.append("model.config.pad_token_id = tokenizer.pad_token_id")
        if self.chat:  # as training and `model:` rewards read it: the whole chat, rendered by the template
            lines += [
                *self._messages(answer=True),
                "text = tokenizer.apply_chat_template(messages, tokenize=False)",
            ]
        else:
            lines.append('text = "YOUR PROMPT" + "AN ANSWER"')
        lines += [
            'inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)',
            "score = model(**inputs).logits[0, 0].item()",
            "```",
            "",
            f"As a reward in a grpo-cli recipe: `rewards: [{{name: 'model:{self.here}'}}]` (GRPO or PPO).",
            "",
        ]
        return lines
