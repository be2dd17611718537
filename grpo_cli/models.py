"""Tokenizers, models and LoRA.

Three ways to get a model: `model.name_or_path` loads any causal LM by Hub id or local directory with
`from_pretrained`; `model.from_config` builds a small randomly initialised one from a transformers config with a
character-level tokenizer made in code, which needs no network (the quickstart and the tests use it);
`model.run` takes the model a previous run trained, its adapter merged. Reward models (one-label sequence
classifiers) come the same three ways, for reward runs to train and for `model:` rewards to score with.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from grpo_cli.char_tokenizers import (  # noqa: F401 (char_tokenizer and the special tokens: re-exported)
    EOS,
    PAD,
    UNK,
    char_tokenizer,
    config_tokenizer,
    saved_as_backend,
)
from grpo_cli.devices import default_device, torch_dtype
from grpo_cli.errors import UserError, describe

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from grpo_cli.model_sources import ModelSource
    from grpo_cli.recipe import FromConfig, LoraSection, ModelSection, Recipe

# What turns huggingface_hub's offline mode on, read as it reads them (1, ON, YES, TRUE).
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def build_from_config(spec: FromConfig, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised causal LM from a transformers config, and its character-level tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = config_tokenizer(spec)
    config = config_from_spec(spec, tokenizer)
    torch.manual_seed(seed)  # the same recipe builds the same initial weights
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def config_from_spec(spec: FromConfig, tokenizer=None):
    """The transformers config `model.from_config` describes (the tokenizer gives the vocabulary and special ids)."""
    from transformers import AutoConfig

    tokenizer = tokenizer or config_tokenizer(spec)
    try:
        return AutoConfig.for_model(
            spec.model_type,
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_hidden_layers,
            num_attention_heads=spec.num_attention_heads,
            num_key_value_heads=spec.num_key_value_heads or spec.num_attention_heads,
            intermediate_size=spec.intermediate_size or 4 * spec.hidden_size,
            max_position_embeddings=spec.max_position_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=spec.tie_word_embeddings,
            **spec.extra,
        )
    except (KeyError, ValueError) as err:
        raise UserError(f"model.from_config: cannot build a {spec.model_type!r} config: {err}") from err


def start_to_keep(spec: ModelSection, model, tokenizer):
    """(model, tokenizer) when the run must keep its starting weights (built from a config, or merged from a
    previous run: nothing else holds them), else None (a Hub id or a directory holds them)."""
    return (model, tokenizer) if spec.name_or_path is None else None


def chat_template_on_disk(spec: ModelSection) -> bool | None:
    """Whether the model's tokenizer has a chat template, when that can be read cheaply (for `validate`): False
    for a model built from a config, whether it names one, the answer of a local directory's
    tokenizer files, None (unknown) for a Hub id or a directory without tokenizer_config.json."""
    import json

    if spec.from_config is not None:
        return spec.from_config.chat_template is not None
    directory = Path(spec.name_or_path or "").expanduser()
    settings_file = directory / "tokenizer_config.json"
    if not settings_file.is_file():
        return None
    # transformers 5 saves the template beside the settings; older versions inside them.
    if any((directory / name).exists() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    if (directory / "additional_chat_templates").is_dir():
        return True
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return bool(settings.get("chat_template")) if isinstance(settings, dict) else None


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # A directory whose tokenizer was saved from a tokenizers object (`char_tokenizers`: the models built from a
    # config) loads as saved: AutoTokenizer would pick the model type's class (Qwen2Tokenizer for qwen2), whose own
    # pre-tokenizer silently drops the characters it does not know, newlines and spaces among them.
    loader = PreTrainedTokenizerFast if saved_as_backend(name_or_path) else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError) as err:
        raise UserError(load_failure("tokenizer", name_or_path, err)) from err
    tokenizer.padding_side = "left"  # generation appends to the right of the prompt
    if tokenizer.pad_token is None:
        # PPO derives attention masks from the pad id, so a pad equal to EOS would mask real EOS tokens:
        # prefer the unk token, and only fall back to EOS when there is nothing else.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def label(spec: ModelSection) -> str:
    """The model as a user named it: its Hub id or directory, or what it is built from."""
    if spec.from_config is not None:
        return f"{spec.from_config.model_type} built from a config"
    if spec.run is not None:
        return f"from the run {spec.run}"
    return str(spec.name_or_path)


def load_model(spec: ModelSection, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy model and its tokenizer, as the recipe's `model` section says."""
    if spec.from_config is not None:
        return build_from_config(spec.from_config, seed)
    if spec.run is not None:
        return load_run_model(Path(spec.run))
    from transformers import AutoModelForCausalLM

    tokenizer = policy_tokenizer(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec.name_or_path,
            dtype=torch_dtype(spec.dtype),
            trust_remote_code=spec.trust_remote_code,
            revision=spec.revision,
        )
    except (OSError, ValueError) as err:
        raise UserError(load_failure("model", spec.name_or_path, err)) from err
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    text_config = model.config.get_text_config()
    if getattr(text_config, "pad_token_id", None) is None:
        # Qwen2.5's config.json has no pad id while its tokenizer has one: transformers' Trainer copies the
        # tokenizer's in with a warning the user can do nothing about. Done here, quietly; a pad id that differs
        # from the tokenizer's still gets the warning.
        text_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def policy_tokenizer(spec: ModelSection) -> PreTrainedTokenizerBase:
    """The tokenizer `load_model` returns, without loading the model (`rewards test` builds prompts with it)."""
    if spec.from_config is not None:
        return config_tokenizer(spec.from_config)
    if spec.run is not None:
        return load_tokenizer(spec.run, trust_remote_code=spec.trust_remote_code)
    return load_tokenizer(spec.name_or_path, trust_remote_code=spec.trust_remote_code, revision=spec.revision)


def load_failure(what: str, name_or_path: str, err: Exception) -> str:
    """One line for a model or tokenizer that `from_pretrained` could not load, with what to do about it."""
    import os

    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if Path(name_or_path).exists():
        hint = "check that the directory holds a saved transformers model (config.json and weights)"
    elif offline := [
        v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    ]:
        hint = (
            f"{offline[0]} is set, so only models already in the Hugging Face cache load: download it once with "
            f"the network on (`hf download {name_or_path}`), or give a local directory"
        )
    else:
        hint = "give a local directory or a Hub id you can reach (offline: set HF_HUB_OFFLINE=1 and use a cached model)"
    return f"cannot load {what} {name_or_path!r}: {first_line} ({hint})"


def lora_config(spec: LoraSection, task_type: str = "CAUSAL_LM") -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        bias=spec.bias,
        task_type=task_type,
    )


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def quiet_progress_bars() -> None:
    """Our progress bars are the ones to watch: none per file from transformers (weights) and datasets."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


@contextlib.contextmanager
def quiet_loading():
    """transformers' loading report and progress bar, silenced: for models whose fresh score head is expected
    (PPO's critic, a reward model), with our own progress bar to follow."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with quiet_deprecations():
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_deprecations():
    """Silence transformers' deprecation warnings that loading a reward model triggers and no recipe can avoid:
    peft's PeftModel (0.x) calls `is_gradient_checkpointing`, which transformers 5 deprecates, so every reward run
    with LoRA printed a FutureWarning when it loaded. Matched by message and category: anything else still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


# ---- reward models (one-label sequence classifiers) and previous runs' models ----


def reward_model_from(causal_model, seed: int):
    """A one-label sequence classifier over a causal LM's weights: its transformer, and a fresh score head.

    Built from the config with the weights copied in, so a model built from a config (or merged from an
    adapter) needs no directory on disk.
    """
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(causal_model.config)
    config.num_labels = 1
    torch.manual_seed(seed)  # the same recipe starts from the same score head
    with quiet_loading():
        model = AutoModelForSequenceClassification.from_config(config, dtype=causal_model.dtype)
    missing, _unused = model.load_state_dict(causal_model.state_dict(), strict=False)
    if any(not key.startswith("score.") for key in missing):
        raise UserError(
            f"a {config.model_type} sequence classifier does not take the causal LM's weights "
            f"(missing {', '.join(missing[:3])}); give a reward model by model.name_or_path"
        )
    return model


def load_reward_model_for_training(spec: ModelSection, seed: int):
    """The model a reward run trains, and its tokenizer: one label, from a Hub id or directory, a previous run
    (a reward run's model as it is; a policy run's model under a fresh score head) or built from a config."""
    from transformers import AutoModelForSequenceClassification

    from grpo_cli.run_files import run_kind

    if spec.run is not None and run_kind(Path(spec.run)) == "reward model":
        return load_reward_model(spec.run, torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code)
    if spec.name_or_path is None:  # from_config, or a policy run's model
        causal, tokenizer = load_model(spec, seed)
        model = reward_model_from(causal, seed)
    else:
        import torch

        tokenizer = policy_tokenizer(spec)
        # A causal LM gets its score head from from_pretrained's random init: seeded, so that the same recipe
        # starts from the same head, and `eval --baseline` (which loads it again) scores the head the run started
        # from, not another random one.
        torch.manual_seed(seed)
        try:
            with quiet_loading():
                model = AutoModelForSequenceClassification.from_pretrained(
                    spec.name_or_path,
                    num_labels=1,
                    dtype=torch_dtype(spec.dtype),
                    trust_remote_code=spec.trust_remote_code,
                    revision=spec.revision,
                )
        except (OSError, ValueError) as err:
            raise UserError(load_failure("reward model", spec.name_or_path, err)) from err
    model.config.pad_token_id = (
        tokenizer.pad_token_id
    )  # the score is read at the last token that is not padding
    return model, tokenizer


def load_reward_model(path: str | Path, dtype, *, trust_remote_code: bool = False):
    """A trained reward model and its tokenizer from a directory: a saved sequence classifier, or a reward run
    whose LoRA adapter (with its score head) is merged into the base it was trained on. A Hub id works too."""
    from transformers import AutoModelForSequenceClassification

    from grpo_cli.run_files import read_adapter_config

    tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
    directory = Path(path)
    adapter_file = directory / "adapter_config.json"
    try:
        with quiet_loading():
            if adapter_file.is_file():
                from peft import PeftModel

                # The model the run started from: its base_model/ (built from a config or taken from a run), else
                # the Hub id or directory peft recorded.
                saved_base = directory / "base_model"
                if (saved_base / "config.json").is_file():
                    base_name = str(saved_base)
                else:
                    base_name = (read_adapter_config(directory) or {}).get("base_model_name_or_path")
                if not base_name:
                    raise ValueError(f"the adapter in {directory} does not say which model it adapts")
                base = AutoModelForSequenceClassification.from_pretrained(
                    base_name, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
                )
                model = PeftModel.from_pretrained(base, str(directory)).merge_and_unload()
            else:
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(path), num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
                )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load reward model {str(path)!r}: {first}") from err
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_run_model(run_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A previous policy run's trained model and tokenizer, its LoRA adapter (if any) merged into its base: the
    model a chained stage (`model: {run: DIR}`) starts from. The run is loaded as `eval --adapter DIR` loads it."""
    from grpo_cli.model_sources import resolve_models
    from grpo_cli.recipe import Recipe
    from grpo_cli.run_files import SUMMARY_FILE, read_recipe, run_kind

    saved = read_recipe(run_dir)
    if saved is None or not (run_dir / SUMMARY_FILE).is_file():
        raise UserError(f"model.run: {run_dir} holds no finished run (no recipe.yaml and summary.json)")
    if run_kind(run_dir) == "reward model":
        raise UserError(
            f"model.run: {run_dir} is a reward-model run, not a policy; name it as a reward "
            f"(rewards: [{{name: 'model:{run_dir}'}}])"
        )
    recipe = Recipe.model_validate(saved)
    tuned, _base = resolve_models(recipe, run_dir, None)
    model, tokenizer = load_source(tuned, recipe)
    return model.to("cpu").train(), tokenizer


# ---- a model source (`model_sources`) loaded to generate from ----

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def load_source(source: ModelSource, recipe: Recipe) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model of a `model_sources.ModelSource` (an adapter merged into its base, for speed), in eval mode, on the GPU
    when there is one, and its tokenizer."""
    spec = recipe.model
    if source.kind == "recipe":
        model, tokenizer = load_model(source.spec, source.seed)
    elif source.kind == "model":
        model = _from_pretrained(source.path, spec)
        tokenizer = _tokenizer(source, recipe)
    else:
        from peft import PeftModel

        base_model, base_tokenizer = load_source(source.base, recipe)
        try:
            model = PeftModel.from_pretrained(base_model, str(source.path)).merge_and_unload()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise UserError(
                f"cannot load the adapter in {source.path} on {source.base.describe()}: {describe(err)} "
                "(was it trained from this base model?)"
            ) from err
        tokenizer = (
            load_tokenizer(str(source.path), trust_remote_code=spec.trust_remote_code)
            if _has_tokenizer(source.path)
            else base_tokenizer
        )
    return model.to(default_device()).eval(), tokenizer


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def _from_pretrained(path: Path, spec: ModelSection) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch_dtype(spec.dtype), trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise UserError(load_failure("model", str(path), err)) from err


def _tokenizer(source: ModelSource, recipe: Recipe) -> PreTrainedTokenizerBase:
    """A saved model's own tokenizer, else its base's (for a recipe's model, the one `load_model` gives it)."""
    if _has_tokenizer(source.path):
        return load_tokenizer(str(source.path), trust_remote_code=recipe.model.trust_remote_code)
    if source.base.kind == "recipe":
        return policy_tokenizer(source.base.spec)
    return _tokenizer(source.base, recipe)
