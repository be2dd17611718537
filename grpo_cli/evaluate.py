"""Evaluation for `grpo-cli eval`: held-out prompts -> K completions each from the tuned model (and, with
`--baseline`, its base) -> the recipe's rewards and any eval-only ones -> metrics, eval.json and eval_samples.jsonl.

What a training run's output directory must hold to be evaluated (GRPO and PPO runs share this layout):
    adapter_config.json + adapter weights   a peft adapter, loaded on its base and merged for generation speed
    config.json + weights                   or a fully fine-tuned model (loadable with AutoModelForCausalLM)
    tokenizer files                         the tokenizer (else the base's)
    base_model/                             for models built from a config: the initial weights and tokenizer
    recipe.yaml                             the resolved training recipe: the base when there is no base_model/
    summary.json                            optional; copied into eval.json so a result names what produced it
A `checkpoint-N/` inside a run works too: recipe.yaml and base_model/ are then looked up in the run directory.

How this departs from generation in training, on purpose:
- K=1 decodes greedily, so a one-sample evaluation is deterministic; K>1 samples with the recipe's `trainer:`
  settings. Each generation batch is seeded with `seed + batch index`, and the batches depend only on the
  prompts, so the base and the tuned model draw with the same seeds.
- Every completion, the base model's included, is tokenized and decoded with ONE tokenizer (the evaluated
  model's), so both models see exactly the same prompt tokens.
- Prompts go longest first, so a batch wastes little on padding; results come back in the dataset's order.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from grpo_cli import data, models, plugins, scoring
from grpo_cli.errors import UserError, describe
from grpo_cli.recipe import EvalSection, ModelSection, Recipe
from grpo_cli.runs import atomic_write, last_checkpoint
from grpo_cli.validation import trainer_value

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


# ---- pass@k and the metrics of one model ----


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from `n` samples of which `c` passed (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), the chance that k of the n drawn without
    replacement include a pass.

    >>> pass_at_k(5, 2, 1), pass_at_k(5, 2, 2), pass_at_k(5, 0, 3), pass_at_k(5, 4, 2)
    (0.4, 0.7, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class Sample:
    """One completion of one held-out prompt, and how it scored."""

    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    clipped: bool  # no EOS within max_completion_length
    scores: dict[str, float | None] = field(default_factory=dict)  # reward name -> score
    total: float | None = None  # the weighted total of the recipe's rewards, as training sees it

    @property
    def length(self) -> int:
        return len(self.token_ids)


def is_pass_fail(scores: list[float | None]) -> bool:
    values = [s for s in scores if s is not None]
    return bool(values) and all(s in (0.0, 1.0) for s in values)


def summarize(
    samples: list[list[Sample]], reward_names: list[str], *, with_total: bool
) -> dict[str, float | None]:
    """Metrics over `samples[prompt][sample]`, named as in metrics.jsonl (`reward`, `rewards/<name>`, ...).

    Means and (population) standard deviations skip None scores. A reward whose scores are all 0 or 1 is pass/fail
    and also gets pass@1 and pass@K (K = samples per prompt), averaged over the prompts it scored at least k times.
    """
    flat = [s for group in samples for s in group]
    metrics: dict[str, float | None] = {}
    if with_total:
        metrics["reward"], metrics["reward_std"] = _mean_std([s.total for s in flat])
    num_samples = max((len(group) for group in samples), default=0)
    for name in reward_names:
        key = f"rewards/{name}"
        metrics[key], metrics[f"{key}/std"] = _mean_std([s.scores.get(name) for s in flat])
        if not is_pass_fail([s.scores.get(name) for s in flat]):
            continue
        for k in sorted({1, num_samples}):
            estimates = []
            for group in samples:
                scored = [s.scores[name] for s in group if s.scores.get(name) is not None]
                if len(scored) >= k:
                    estimates.append(pass_at_k(len(scored), int(sum(scored)), k))
            metrics[f"{key}/pass@{k}"] = sum(estimates) / len(estimates) if estimates else None
    metrics["completion_length"] = _mean_std([s.length for s in flat])[0]
    metrics["clipped_ratio"] = _mean_std([float(s.clipped) for s in flat])[0]
    return metrics


def _mean_std(values) -> tuple[float | None, float | None]:
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.pstdev(present)


def difference(tuned: dict[str, float | None], base: dict[str, float | None]) -> dict[str, float | None]:
    """tuned - base for every metric both have."""
    return {
        key: None if tuned[key] is None or base.get(key) is None else tuned[key] - base[key]
        for key in tuned
        if key in base
    }


# ---- generation ----


@dataclass(frozen=True)
class Sampling:
    """How completions are generated: greedy for one sample per prompt, else the recipe's sampling settings."""

    num_samples: int
    max_new_tokens: int
    seed: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: dict = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.num_samples == 1

    def describe(self) -> dict[str, Any]:
        if self.greedy:
            return {"decoding": "greedy", "max_completion_length": self.max_new_tokens}
        return {
            "decoding": "sampling",
            "max_completion_length": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "generation_kwargs": self.generation_kwargs,
            "seed": self.seed,
        }

    def generation_config(self, tokenizer, eos_ids: list[int]) -> GenerationConfig:
        from transformers import GenerationConfig

        common = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": eos_ids,
            "bos_token_id": tokenizer.bos_token_id,
            **models.suppressed_special_tokens(tokenizer, eos_ids),  # as GRPO training generates
        }
        if self.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            **{**common, **self.generation_kwargs},
        )


def sampling_settings(recipe: Recipe, num_samples: int) -> Sampling:
    """The recipe's `trainer:` generation settings, TRL's defaults where it sets none."""
    if recipe.algorithm == "ppo":
        # TRL's PPOTrainer samples with its temperature and no top-k/top-p, up to response_length tokens.
        return Sampling(
            num_samples=num_samples,
            max_new_tokens=trainer_value(recipe, "response_length"),
            seed=recipe.seed,
            temperature=trainer_value(recipe, "temperature"),
        )
    return Sampling(
        num_samples=num_samples,
        max_new_tokens=trainer_value(recipe, "max_completion_length") or 512,
        seed=recipe.seed,
        temperature=trainer_value(recipe, "temperature"),
        top_p=trainer_value(recipe, "top_p"),
        top_k=trainer_value(recipe, "top_k"),
        min_p=trainer_value(recipe, "min_p"),
        repetition_penalty=trainer_value(recipe, "repetition_penalty"),
        generation_kwargs=trainer_mapping(recipe, "generation_kwargs"),
    )


def trainer_mapping(recipe: Recipe, key: str) -> dict:
    """A `trainer:` field that TRL types `dict | str | None` (the str holding JSON), as a dict."""
    value = trainer_value(recipe, key) or {}
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if not isinstance(value, dict):
        raise UserError(f"trainer.{key}: expected a mapping (or a JSON object), got {value!r}")
    return dict(value)


def eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *ids] if i is not None})


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    sampling: Sampling,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[Sample]]:
    """`sampling.num_samples` completions of each prompt, `batch_size` sequences per left-padded batch;
    `on_batch(n)` is called after each batch with the number of completions it made."""
    import torch

    stops = eos_ids(model, tokenizer)
    config = sampling.generation_config(tokenizer, stops)
    # Longest prompts first: each batch pads little. The order depends on the prompts alone, so two models given
    # the same prompts get the same batches and the same per-batch seeds.
    items = [(i, j) for i in range(len(prompt_ids)) for j in range(sampling.num_samples)]
    items.sort(key=lambda item: -len(prompt_ids[item[0]]))
    results: list[list[Sample | None]] = [[None] * sampling.num_samples for _ in prompt_ids]
    pad = tokenizer.pad_token_id
    model.eval()
    for number, start in enumerate(range(0, len(items), batch_size)):
        batch = items[start : start + batch_size]
        rows = [prompt_ids[i] for i, _ in batch]
        width = max(len(row) for row in rows)
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=model.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(row)) + [1] * len(row) for row in rows], device=model.device
        )
        if not sampling.greedy:
            torch.manual_seed(sampling.seed + number)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config
            )
        for (i, j), ids in zip(batch, output[:, width:].tolist(), strict=True):
            end = next((n for n, token in enumerate(ids) if token in stops), None)
            kept = ids if end is None else ids[: end + 1]  # as TRL: the EOS counts, what follows it does not
            text = tokenizer.decode(kept, skip_special_tokens=True)
            results[i][j] = Sample(i, j, text, kept, clipped=end is None)
        if on_batch is not None:
            on_batch(len(batch))
    return results


# ---- what is evaluated ----


@dataclass
class ModelSource:
    """A model to evaluate: where it is and how to load it."""

    # A peft adapter on `base`, a saved model directory, or a recipe's model section (Hub id, dir or from_config).
    kind: Literal["adapter", "model", "recipe"]
    path: Path | None = None  # the adapter or model directory
    spec: ModelSection | None = None  # kind "recipe"
    seed: int = 0  # kind "recipe" with from_config: the seed that built the initial weights
    base: ModelSource | None = (
        None  # what an adapter adapts; for a model dir, where a missing tokenizer comes from
    )
    run_dir: Path | None = None  # the training run it came from

    def describe(self) -> str:
        if self.kind == "adapter":
            return f"adapter {self.path} on {self.base.describe()}"
        if self.kind == "model":
            return str(self.path)
        if self.spec.from_config is not None:
            return f"the recipe's model.from_config (seed {self.seed})"
        return self.spec.name_or_path

    def identity(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind}
        if self.path is not None:
            info["path"] = str(self.path)
        if self.kind == "recipe":
            info["model"] = self.spec.model_dump(mode="json", exclude_none=True)
            if self.spec.from_config is not None:
                info["seed"] = self.seed
        if self.kind == "adapter":
            info["base"] = self.base.identity()
        if self.run_dir is not None:
            info["run_dir"] = str(self.run_dir)
            summary = self.run_dir / "summary.json"
            info["run_summary"] = _read_json(summary) if summary.is_file() else None
        return info


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _run_recipe(run_dir: Path) -> dict | None:
    try:
        loaded = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _run_root(directory: Path) -> Path:
    """The run a directory belongs to: itself, or its parent for a checkpoint-N inside a run."""
    if not (directory / "recipe.yaml").is_file() and (directory.parent / "recipe.yaml").is_file():
        return directory.parent
    return directory


def _run_base(root: Path, recipe_base: ModelSource) -> ModelSource:
    """The model a run started from: its base_model/, else its recipe's model, else the given recipe's."""
    if (root / "base_model" / "config.json").is_file():
        return ModelSource("model", path=(root / "base_model").resolve(), base=recipe_base)
    run_recipe = _run_recipe(root) or {}
    try:
        spec = ModelSection.model_validate(run_recipe["model"])
        return ModelSource("recipe", spec=spec, seed=int(run_recipe.get("seed", recipe_base.seed)))
    except (KeyError, TypeError, ValueError):
        return recipe_base


def resolve_models(
    recipe: Recipe, adapter: Path | None, model: Path | None
) -> tuple[ModelSource | None, ModelSource]:
    """(the tuned model or None, the base model) for `--adapter RUN_DIR`, `--model PATH` or neither."""
    recipe_base = ModelSource("recipe", spec=recipe.model, seed=recipe.seed)
    if adapter is not None and model is not None:
        raise UserError("--adapter and --model both name a model to evaluate: give one")
    if model is not None:
        if not model.is_dir():
            raise UserError(f"--model {model}: no such directory; give a model saved with save_pretrained")
        if (model / "adapter_config.json").is_file():
            raise UserError(f"--model {model} holds a peft adapter: pass it as --adapter {model}")
        if not (model / "config.json").is_file():
            raise UserError(
                f"--model {model} has no config.json: give a directory saved with save_pretrained"
            )
        return ModelSource("model", path=model.resolve(), base=recipe_base), recipe_base
    if adapter is None:
        return None, recipe_base
    if not adapter.is_dir():
        raise UserError(
            f"--adapter {adapter}: no such directory; give the output directory of a training run"
        )
    root = _run_root(adapter)
    base = _run_base(root, recipe_base)
    if (adapter / "adapter_config.json").is_file():
        kind = "adapter"
    elif (adapter / "config.json").is_file():
        kind = "model"
    else:
        checkpoint = last_checkpoint(adapter)
        hint = (
            f"; is the run unfinished? evaluate its last checkpoint with --adapter {checkpoint}"
            if checkpoint
            else "; give the output directory of a finished training run"
        )
        raise UserError(
            f"--adapter {adapter} holds neither a peft adapter (adapter_config.json) nor a model (config.json){hint}"
        )
    return ModelSource(kind, path=adapter.resolve(), base=base, run_dir=root.resolve()), base


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def load(source: ModelSource, recipe: Recipe) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model (in eval mode, on the GPU when there is one) and its tokenizer."""
    import torch

    spec = recipe.model
    if source.kind == "recipe":
        model, tokenizer = models.load_model(source.spec, source.seed)
    elif source.kind == "model":
        model = _from_pretrained(source.path, spec)
        tokenizer = _tokenizer(source, recipe)
    else:
        from peft import PeftModel

        base_model, base_tokenizer = load(source.base, recipe)
        try:
            model = PeftModel.from_pretrained(base_model, str(source.path)).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise UserError(
                f"cannot load the adapter in {source.path} on {source.base.describe()}: {describe(err)} "
                "(was it trained from this base model?)"
            ) from err
        tokenizer = models.load_tokenizer(str(source.path)) if _has_tokenizer(source.path) else base_tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def _from_pretrained(path: Path, spec: ModelSection) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=models.torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise UserError(models._load_failure("model", str(path), err)) from err


def _tokenizer(source: ModelSource, recipe: Recipe) -> PreTrainedTokenizerBase:
    """A saved model's own tokenizer, else its base's."""
    if _has_tokenizer(source.path):
        return models.load_tokenizer(str(source.path), trust_remote_code=recipe.model.trust_remote_code)
    base = source.base
    if base.kind == "recipe" and base.spec.from_config is not None:
        return models.char_tokenizer(base.spec.from_config.vocabulary)
    if base.kind == "recipe":
        return models.load_tokenizer(
            base.spec.name_or_path, trust_remote_code=base.spec.trust_remote_code, revision=base.spec.revision
        )
    return _tokenizer(base, recipe)


# ---- rewards and prompts ----


@dataclass
class Rewards:
    training: list[plugins.BoundReward]  # the recipe's rewards, reward models loaded
    eval_only: list[plugins.BoundReward]  # eval.rewards

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.training + self.eval_only]


def bind_rewards(recipe: Recipe) -> Rewards:
    training = plugins.bind_all(recipe.rewards)
    eval_only, problems = [], []
    for i, entry in enumerate((recipe.eval or EvalSection()).rewards):
        try:
            eval_only.append(plugins.bind(entry, f"eval.rewards[{i}]"))
        except UserError as err:
            problems.append(str(err))
    names = [r.name for r in training]
    for i, reward in enumerate(eval_only):
        if reward.name in names:
            problems.append(
                f"eval.rewards[{i}] ({reward.name}) is already a training reward, whose metrics eval reports anyway: "
                "remove it from eval.rewards"
            )
        names.append(reward.name)
    if problems:
        raise UserError("\n".join(problems), problems)
    kwargs = trainer_mapping(recipe, "chat_template_kwargs") if recipe.algorithm == "grpo" else {}
    load = functools.partial(
        scoring.load_reward_models, dtype=recipe.model.dtype, chat_template_kwargs=kwargs
    )
    return Rewards(load(training), load(eval_only))


def held_out_rows(recipe: Recipe, limit: int | None):
    """The recipe's held-out rows (the first `limit` of them), before prompts are built."""
    _, held_out = data.load_splits(recipe.dataset, recipe.seed)
    if held_out is None:
        raise UserError(
            "the recipe has no held-out data to evaluate on: set dataset.eval_split (a split name or file), "
            "dataset.eval_ratio (e.g. 0.1) or dataset.eval_size (e.g. 200), in the recipe or as KEY=VALUE"
        )
    if limit is not None:
        held_out = held_out.select(range(min(limit, len(held_out))))
    return held_out


def score(
    samples: list[list[Sample]], rows: list[dict], rewards: Rewards, chat: bool, batch_size: int
) -> None:
    """Score every sample in place with scoring.score_table, `batch_size` completions per reward call."""
    flat = [s for group in samples for s in group]
    columns = [c for c in (rows[0] if rows else {}) if c != "prompt"]
    for start in range(0, len(flat), batch_size):
        part = flat[start : start + batch_size]
        prompts = [rows[s.prompt_index]["prompt"] for s in part]
        # Completions as TRL hands them to rewards: text, or an assistant message for chat prompts.
        completions = [[{"role": "assistant", "content": s.text}] if chat else s.text for s in part]
        kwargs = {c: [rows[s.prompt_index][c] for s in part] for c in columns}
        kwargs["completion_ids"] = [s.token_ids for s in part]
        table = scoring.score_table(rewards.training, prompts, completions, kwargs)
        totals = scoring.weighted_total(rewards.training, table) if table else [None] * len(part)
        extra = scoring.score_table(rewards.eval_only, prompts, completions, kwargs)
        names = [r.name for r in rewards.training + rewards.eval_only]
        for n, sample in enumerate(part):
            sample.scores = {name: scores[n] for name, scores in zip(names, table + extra, strict=True)}
            sample.total = totals[n]


# ---- the whole evaluation ----


@dataclass
class EvalResult:
    settings: dict[str, Any]
    models: dict[str, dict]  # "tuned" / "base" -> identity
    metrics: dict[str, dict]  # "tuned" / "base" / "delta" -> metric -> value
    samples: dict[str, list[list[Sample]]]  # "tuned" / "base" -> [prompt][sample]
    rows: list[dict]
    timing: dict[str, dict]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "models": self.models,
            "metrics": self.metrics,
            "timing": self.timing,
            "notes": self.notes,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def sample_lines(self) -> str:
        lines = []
        for role, groups in self.samples.items():
            for group in groups:
                for s in group:
                    row = self.rows[s.prompt_index]
                    record = {
                        "model": role,
                        "prompt_index": s.prompt_index,
                        "sample": s.sample_index,
                        "prompt": row["prompt"],
                        "completion": s.text,
                        "completion_length": s.length,
                        "clipped": s.clipped,
                        "reward": s.total,
                        "rewards": s.scores,
                        "columns": {k: v for k, v in row.items() if k != "prompt"},
                    }
                    lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        return "".join(lines)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """eval_samples.jsonl, then eval.json, each written whole or not at all."""
        samples_path, eval_path = directory / "eval_samples.jsonl", directory / "eval.json"
        atomic_write(samples_path, self.sample_lines())
        atomic_write(eval_path, json.dumps(self.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")
        return eval_path, samples_path


def run(
    recipe: Recipe,
    *,
    adapter: Path | None = None,
    model: Path | None = None,
    baseline: bool = False,
    num_samples: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    note: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate the tuned model (or, with neither `adapter` nor `model`, the recipe's base) on held-out prompts."""
    section = recipe.eval or EvalSection()
    num_samples = num_samples or section.num_samples
    limit = limit if limit is not None else section.limit
    if num_samples < 1 or batch_size < 1 or (limit is not None and limit < 1):
        raise UserError("--num-samples, --batch-size and --limit must be at least 1")
    notes: list[str] = []

    def tell(message: str) -> None:
        notes.append(message)
        if note is not None:
            note(message)

    # Cheap checks first: the models' whereabouts, the rewards, the data; then load.
    tuned, base = resolve_models(recipe, adapter, model)
    if baseline and tuned is None:
        raise UserError(
            "--baseline compares a tuned model with its base: also give --adapter RUN_DIR or --model PATH"
        )
    rewards = bind_rewards(recipe)
    if tuned is not None and tuned.run_dir is not None:
        _check_same_split(recipe, tuned.run_dir, tell)
    sampling = sampling_settings(recipe, num_samples)
    raw_rows = held_out_rows(recipe, limit)

    models.quiet_progress_bars()
    roles = [("tuned", tuned)] if tuned is not None else []
    if baseline or tuned is None:
        roles.append(("base", base))
    samples, timing, identities = {}, {}, {}
    tokenizer = rows = prompt_ids = chat = None
    for role, source in roles:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations inside peft's merge
            loaded, own_tokenizer = load(source, recipe)
        if tokenizer is None:  # the first model's tokenizer serves both (see the module docstring)
            tokenizer = own_tokenizer
            prepared = data.prepare(raw_rows, recipe.dataset, tokenizer)
            rows = list(prepared)
            chat = data.uses_chat(recipe.dataset, tokenizer)
            template_kwargs = (
                trainer_mapping(recipe, "chat_template_kwargs") if recipe.algorithm == "grpo" else {}
            )
            prompt_ids = data.tokenize_prompts(tokenizer, [r["prompt"] for r in rows], template_kwargs)
        started = time.perf_counter()
        with _progress(f"generating ({role})", len(rows) * num_samples, progress) as advance:
            samples[role] = generate(loaded, tokenizer, prompt_ids, sampling, batch_size, advance)
        seconds = time.perf_counter() - started
        count = len(rows) * num_samples
        timing[role] = {"generation_s": round(seconds, 3), "completions_per_s": round(count / seconds, 2)}
        identities[role] = source.identity()
        del loaded
        gc.collect()
        score(samples[role], rows, rewards, chat, batch_size)

    with_total = bool(rewards.training)
    metrics = {
        role: summarize(groups, rewards.names, with_total=with_total) for role, groups in samples.items()
    }
    if "tuned" in metrics and "base" in metrics:
        metrics["delta"] = difference(metrics["tuned"], metrics["base"])
    settings = {
        "recipe": str(recipe.path) if recipe.path else None,
        "algorithm": recipe.algorithm,
        "held_out": _held_out_spec(recipe),
        "num_prompts": len(rows),
        "num_samples": num_samples,
        "limit": limit,
        "batch_size": batch_size,
        "seed": recipe.seed,
        "chat": chat,
        **sampling.describe(),
        "rewards": [{"name": r.name, "weight": r.entry.weight} for r in rewards.training],
        "eval_rewards": [r.name for r in rewards.eval_only],
        "device": _device_name(),
    }
    return EvalResult(settings, identities, metrics, samples, rows, timing, notes)


def _held_out_spec(recipe: Recipe) -> dict[str, Any]:
    spec = recipe.dataset
    return {
        k: getattr(spec, k) for k in ("eval_split", "eval_ratio", "eval_size") if getattr(spec, k) is not None
    }


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _check_same_split(recipe: Recipe, run_dir: Path, tell: Callable[[str], None]) -> None:
    """The held-out rows are split with the recipe's seed: a different dataset or seed than the run's may leak
    training rows into the evaluation."""
    trained = _run_recipe(run_dir)
    if trained is None:
        return
    mine = recipe.model_dump(mode="json")
    if trained.get("dataset") != mine["dataset"] or trained.get("seed") != mine["seed"]:
        tell(
            f"the recipe's dataset or seed differs from {run_dir / 'recipe.yaml'}: "
            "the held-out prompts may include rows the model was trained on"
        )


@contextlib.contextmanager
def _progress(description: str, total: int, show: bool):
    """A rich progress bar on stderr over the completions generated, advanced once per batch."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("completions"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
