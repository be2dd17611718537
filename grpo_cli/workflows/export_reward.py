"""The reward-model half of `grpo-cli export`: a reward run's model is a one-label sequence classifier (a score
head on a transformer), so it is loaded, saved and checked as one, never as a causal LM.

The check compares scores, not next-token logits: the run's model (its adapter on its base, as `eval` and a
`model:` reward load it) and the export, loaded back as a user would (`AutoModelForSequenceClassification`
alone for a merged export; peft on its base for an adapter), score a few of the recipe's preference texts, read
as training read them (`reward_models.tokenize_pairs`).
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli import data, devices, models, prompting
from grpo_cli.errors import UserError, describe
from grpo_cli.model_sources import ModelSource
from grpo_cli.recipe import Recipe

CHECK_PAIRS = 2  # each gives two texts: prompt + chosen, prompt + rejected


def load_base(base: ModelSource, recipe: Recipe):
    """The sequence classifier an adapter was trained on (its head as training started) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    if base.kind == "recipe":
        return models.load_reward_model_for_training(base.spec, base.seed)
    try:
        with models.quiet_loading():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(base.path),
                num_labels=1,
                dtype=devices.torch_dtype(recipe.model.dtype),
                trust_remote_code=recipe.model.trust_remote_code,
            )
    except (OSError, ValueError) as err:
        raise UserError(models.load_failure("reward model", str(base.path), err)) from err
    tokenizer = (
        models.load_tokenizer(str(base.path), trust_remote_code=recipe.model.trust_remote_code)
        if _has_tokenizer(base.path)
        else models.policy_tokenizer(recipe.model)
    )
    return model, tokenizer


def load_run_model(source):
    """The reward run's model as the run scores with it: its adapter (score head included) on its base, not
    merged, or its fully trained model; in eval mode, with the tokenizer and pad id it scores with."""
    from transformers import AutoModelForSequenceClassification

    recipe = source.recipe
    if source.is_adapter:
        from peft import PeftModel

        base, tokenizer = load_base(source.tuned.base, recipe)
        try:
            model = PeftModel.from_pretrained(base, str(source.path))
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise UserError(
                f"cannot load the adapter in {source.path} on {source.tuned.base.describe()}: {describe(err)}"
            ) from err
    else:
        try:
            with models.quiet_loading():
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(source.path),
                    num_labels=1,
                    dtype=devices.torch_dtype(recipe.model.dtype),
                    trust_remote_code=recipe.model.trust_remote_code,
                )
        except (OSError, ValueError) as err:
            raise UserError(models.load_failure("reward model", str(source.path), err)) from err
        tokenizer = None
    if _has_tokenizer(source.path):
        tokenizer = models.load_tokenizer(str(source.path), trust_remote_code=recipe.model.trust_remote_code)
    elif tokenizer is None:
        tokenizer = load_base(source.tuned.base, recipe)[1]
    model.config.pad_token_id = (
        tokenizer.pad_token_id
    )  # the score is read at the last token that is not padding
    return model.eval(), tokenizer


def check_texts(recipe: Recipe, tokenizer) -> list[list[int]]:
    """Token ids of a few preference texts (prompt + chosen, prompt + rejected) of the recipe's first rows, as the
    run read them; fixed texts when the dataset cannot be read here (e.g. a Hub dataset offline)."""
    from grpo_cli.reward_models import tokenize_pairs

    try:
        rows = data.first_rows(recipe.dataset, CHECK_PAIRS)
        pairs = tokenize_pairs(prompting.prepare_preferences(rows, recipe.dataset, tokenizer), tokenizer)
        ids = [row for pair in zip(pairs["chosen_ids"], pairs["rejected_ids"], strict=True) for row in pair]
    except Exception:  # any failure to read the data: the check still runs on fixed texts
        ids = []
    ids = [row for row in ids if row]
    if not ids:
        texts = ["1+2=3", "1+2=4", "The capital of France is Paris.", "The capital of France is Rome."]
        ids = [row for row in tokenizer(texts, add_special_tokens=False)["input_ids"] if row]
    return ids[: 2 * CHECK_PAIRS]


def scores(model, texts: list[list[int]]) -> list:
    """Each text's score (one at a time: no padding to get wrong), as a float32 tensor on the CPU."""
    import torch

    outputs = []
    with torch.inference_mode():
        for ids in texts:
            input_ids = torch.tensor([ids], device=model.device)
            outputs.append(model(input_ids=input_ids).logits[0].float().cpu())
    return outputs


def load_exported(directory: Path, *, trust_remote_code: bool = False):
    """A merged reward export, loaded as its card says: `AutoModelForSequenceClassification` alone, no arguments."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(directory), dtype="auto", trust_remote_code=trust_remote_code
    )
    problems = []
    if not any(a.endswith("ForSequenceClassification") for a in model.config.architectures or []):
        problems.append(f"architectures {model.config.architectures}")
    if model.config.num_labels != 1:
        problems.append(f"num_labels {model.config.num_labels}")
    if model.config.pad_token_id is None:
        problems.append("no pad_token_id")
    if problems:
        raise UserError(f"the exported reward model is not a one-label scorer ({', '.join(problems)})")
    return model.to(devices.default_device()).eval()


def load_exported_adapter(directory: Path, base_name: str, *, trust_remote_code: bool = False):
    """An adapter-only reward export on the base its adapter_config.json names (a folder inside the export is
    looked up there, wherever the export now is), as its card says."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    inside = directory / base_name
    where = str(inside) if inside.is_dir() else base_name
    tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    with models.quiet_loading():  # the base's score head is replaced by the adapter's
        base = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=1, trust_remote_code=trust_remote_code
        )
    base.config.pad_token_id = tokenizer.pad_token_id
    return PeftModel.from_pretrained(base, str(directory)).eval()


def _has_tokenizer(directory: Path | None) -> bool:
    return directory is not None and any((directory / name).is_file() for name in models.TOKENIZER_FILES)
