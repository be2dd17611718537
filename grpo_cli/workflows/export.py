"""`grpo-cli export`: a run (or one of its `checkpoint-N/`) -> a standalone Hugging Face model directory.

Merged (the default): the base model with the LoRA adapter merged in (or the fully fine-tuned model), saved with
`save_pretrained` (safetensors, sharded as transformers shards), the run's tokenizer with its chat template, and a
generation config that stops on the EOS ids used in training and keeps pad/unk/bos out as training did. It loads
with `AutoModelForCausalLM` alone: no grpo-cli, no peft. A reward run's model is a one-label sequence classifier,
exported as one (`export_reward`): it loads with `AutoModelForSequenceClassification` alone. `--adapter-only`: the
peft adapter (a reward run's with its score head), with an `adapter_config.json` whose `base_model_name_or_path`
still loads wherever the export goes: a Hub id as it is, a local base (the user's directory, or a run's
`base_model/`) copied into the export's `base_model/` and named relative to it (`LOCAL_BASE`).

How the output directory is treated, with the same care as `train`'s:
- Built in a staging directory beside it and moved into place at the end: an export appears whole or not at all.
- An existing non-empty directory is replaced only with `--overwrite`, and only when it holds this module's
  marker file (`MARKER`): a directory of anything else is never deleted, nor one that holds the source run.

Checked on the way out: the exported model, loaded back from disk as a user would load it, gives the same
logits (a reward model: scores) as the adapter on its base (or the run's full model) on a few of the recipe's
prompts, within a
tolerance that depends on the exported dtype; the result is returned and printed.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grpo_cli import __version__, models
from grpo_cli.devices import default_device
from grpo_cli.errors import UserError, describe
from grpo_cli.generation import eos_ids, suppressed_special_tokens
from grpo_cli.model_card import LOCAL_BASE  # a local base, copied into the export, named relative to it
from grpo_cli.model_sources import ModelSource, resolve_models, run_root
from grpo_cli.models import TOKENIZER_FILES, load_source
from grpo_cli.recipe import Recipe, load_recipe
from grpo_cli.run_dir import last_checkpoint
from grpo_cli.run_files import EXPORT_MARKER_FILE as MARKER  # says a directory holds an export to replace
from grpo_cli.run_files import atomic_write, follow_umask, read_adapter_config, run_kind
from grpo_cli.workflows import export_reward
from grpo_cli.workflows.export_check import (  # noqa: F401 (CHECK_PROMPTS, TOLERANCE: part of this module's API)
    CHECK_PROMPTS,
    DTYPES,
    TOLERANCE,
    Check,
    check_prompts,
    compare,
    logits,
)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


@dataclass
class Source:
    """What is exported: a run directory or one of its checkpoints, with the run's recipe."""

    path: Path  # the run directory or checkpoint-N
    run_dir: Path  # the run it belongs to
    recipe: Recipe
    tuned: ModelSource  # kind "adapter" or "model"

    @property
    def is_adapter(self) -> bool:
        return self.tuned.kind == "adapter"

    @property
    def is_reward_model(self) -> bool:
        """A reward run's model: a one-label sequence classifier, exported and checked as one."""
        return run_kind(self.run_dir) == "reward model"


@dataclass
class Exported:
    directory: Path
    kind: str  # "merged" (adapter merged into its base), "full" (a fully fine-tuned model) or "adapter"
    dtype: str
    check: Check | None  # None until an adapter-only export is checked, once in place
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())


def find_source(path: Path) -> Source:
    """The run (or checkpoint) at `path`, its recipe and its tuned model; one-line errors for anything else."""
    if not path.is_dir():
        raise UserError(
            f"{path}: no such directory; give a training run's output directory (or a checkpoint-N in it)"
        )
    run_dir = run_root(path)
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(
            f"{path} is not a grpo-cli run (no recipe.yaml in it or its parent); "
            "give a training run's output directory or a checkpoint-N inside one"
        )
    if not any((path / name).is_file() for name in ("adapter_config.json", "config.json")):
        checkpoint = last_checkpoint(path)
        hint = f"; is the run unfinished? export its last checkpoint: {checkpoint}" if checkpoint else ""
        raise UserError(
            f"{path} holds neither a LoRA adapter (adapter_config.json) nor a model (config.json){hint}"
        )
    recipe = load_recipe(run_dir / "recipe.yaml")
    tuned, _ = resolve_models(recipe, adapter=path, model=None)
    return Source(path=path.resolve(), run_dir=run_dir.resolve(), recipe=recipe, tuned=tuned)


def check_output_dir(out: Path, *, overwrite: bool, source: Source) -> None:
    """Refuse an output directory that cannot be written, or replaced, safely (before anything loads)."""
    resolved = out.resolve()
    for kept in (source.path, source.run_dir):
        if resolved == kept or resolved in kept.parents:
            raise UserError(f"--output-dir {out} holds the run being exported; give a new directory")
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(
                f"{out} is not empty and holds no grpo-cli export (no {MARKER}); give an empty or new --output-dir"
            )
        if not overwrite:
            raise UserError(
                f"{out} already holds an export; pass --overwrite to replace it, or give another --output-dir"
            )


def export(
    path: Path,
    out: Path,
    *,
    adapter_only: bool = False,
    dtype: str | None = None,
    overwrite: bool = False,
    note: Callable[[str], None] | None = None,
) -> Exported:
    """Export the run or checkpoint at `path` into `out` (see the module docstring)."""
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: give one of {', '.join(DTYPES)}")
    source = find_source(path)
    if adapter_only and not source.is_adapter:
        raise UserError(
            f"--adapter-only: {path} holds a fully fine-tuned model, not a LoRA adapter; export it without --adapter-only"
        )
    check_output_dir(out, overwrite=overwrite, source=source)
    models.quiet_progress_bars()

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # ours: a previous attempt by this very process id
    staging.mkdir()
    try:
        if adapter_only:
            result = _export_adapter(source, staging, dtype)
        elif source.is_reward_model:
            result = _export_merged_reward(source, staging, dtype)
        else:
            result = _export_merged(source, staging, dtype)
        from grpo_cli import model_card

        base = (read_adapter_config(staging) or {}).get("base_model_name_or_path")  # an adapter's base
        model_card.write_export_card(staging, source.path, kind=result.kind, base=base)
        marker = {
            "grpo_cli_version": __version__,
            "kind": result.kind,
            "source": str(source.path),
            "dtype": result.dtype,
            "check": result.check.to_json() if result.check else None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": source.recipe.model_dump(mode="json"),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        follow_umask(staging)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.directory = out
    result.files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    if adapter_only:
        result.check = _check_adapter_export(source, out)
        marker["check"] = result.check.to_json()
        atomic_write(out / MARKER, json.dumps(marker, indent=2) + "\n")
    for message in result.notes:
        if note is not None:
            note(message)
    return result


def _move_into_place(staging: Path, out: Path) -> None:
    """Swap the finished export in; an old export (checked by check_output_dir) goes only once the new one is there."""
    old = None
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).is_file():  # it changed since the check: leave it be
            raise UserError(
                f"{out} is not empty and holds no grpo-cli export; give an empty or new --output-dir"
            )
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


# ---- merged (or full) model ----


def _export_merged(source: Source, staging: Path, dtype: str | None) -> Exported:
    import torch

    recipe = source.recipe
    if source.is_adapter:
        model, tokenizer = _adapter_on_base(source)
    else:
        model, tokenizer = load_source(source.tuned, recipe)
    prompts = check_prompts(recipe, tokenizer)
    reference = logits(model, prompts)
    if source.is_adapter:
        model = model.merge_and_unload()
    target = dtype or _saved_dtype(source)
    model = model.to(getattr(torch, target))
    stops = eos_ids(model, tokenizer)
    config = model.generation_config
    config.eos_token_id = stops if len(stops) > 1 else stops[0] if stops else None
    config.pad_token_id = tokenizer.pad_token_id
    suppress = suppressed_special_tokens(tokenizer, stops).get("suppress_tokens")
    if suppress:
        config.suppress_tokens = (
            suppress  # as training and eval generate: see generation.suppressed_special_tokens
        )
    model.config.eos_token_id = config.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True  # training turns the KV cache off; inference wants it
    _save(model, tokenizer, staging)
    del model
    gc.collect()
    exported = _from_pretrained(staging, trust_remote_code=recipe.model.trust_remote_code)
    check = compare(reference, logits(exported, prompts), target)
    if not check.ok:
        raise UserError(
            f"the exported model's logits differ from the run's by up to {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance:.3g} for {target}) on {check.prompts} prompts; nothing was written"
        )
    return Exported(staging, "merged" if source.is_adapter else "full", target, check)


def _save(model, tokenizer, staging: Path) -> None:
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except OSError as err:
        raise UserError(f"cannot write the export: {describe(err)}") from err


def _export_merged_reward(source: Source, staging: Path, dtype: str | None) -> Exported:
    """A reward run -> a one-label sequence classifier that loads with AutoModelForSequenceClassification alone."""
    import torch

    model, tokenizer = export_reward.load_run_model(source)
    texts = export_reward.check_texts(source.recipe, tokenizer)
    reference = export_reward.scores(model, texts)
    if source.is_adapter:
        model = (
            model.merge_and_unload()
        )  # the trained score head (peft's modules_to_save) replaces the base's
    target = dtype or _saved_dtype(source)
    model = model.to(getattr(torch, target))
    model.config.num_labels = 1
    model.config.pad_token_id = tokenizer.pad_token_id
    _save(model, tokenizer, staging)
    del model
    gc.collect()
    exported = export_reward.load_exported(staging, trust_remote_code=source.recipe.model.trust_remote_code)
    check = compare(reference, export_reward.scores(exported, texts), target)
    check.measure = "scores"
    if not check.ok:
        raise UserError(
            f"the exported reward model's scores differ from the run's by up to {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance:.3g} for {target}) on {check.prompts} texts; nothing was written"
        )
    return Exported(staging, "merged" if source.is_adapter else "full", target, check)


def _adapter_on_base(source: Source):
    """The run's adapter on its base (not merged: the reference the merged model must match) and the tokenizer."""
    from peft import PeftModel

    base_model, base_tokenizer = load_source(source.tuned.base, source.recipe)
    try:
        model = PeftModel.from_pretrained(base_model, str(source.path))
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UserError(
            f"cannot load the adapter in {source.path} on {source.tuned.base.describe()}: {describe(err)}"
        ) from err
    tokenizer = (
        models.load_tokenizer(str(source.path), trust_remote_code=source.recipe.model.trust_remote_code)
        if _has_tokenizer(source.path)
        else base_tokenizer
    )
    return model.eval(), tokenizer


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def _saved_dtype(source: Source) -> str:
    """The dtype the base (or the full model) was saved in, the export's default; else float32."""
    from transformers import AutoConfig

    spec = source.recipe.model
    if source.is_adapter and source.tuned.base.kind == "recipe":
        where, revision = spec.name_or_path, spec.revision  # a Hub id or local directory, already loaded once
    else:
        where, revision = str(source.tuned.base.path if source.is_adapter else source.tuned.path), None
    if not where or where == "None":
        return "float32"
    try:
        config = AutoConfig.from_pretrained(
            where, revision=revision, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError):
        return "float32"
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    saved = str(saved).removeprefix("torch.") if saved is not None else None
    return saved if saved in DTYPES else "float32"


def _from_pretrained(directory: Path, *, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(directory), dtype="auto", trust_remote_code=trust_remote_code
    )
    return model.to(default_device()).eval()


# ---- adapter only ----


def _export_adapter(source: Source, staging: Path, dtype: str | None) -> Exported:
    notes = []
    for name in ADAPTER_FILES:
        if (source.path / name).is_file():
            shutil.copy2(source.path / name, staging / name)
    # Also proves the adapter loads on its base.
    load = export_reward.load_run_model if source.is_reward_model else _adapter_on_base
    _, tokenizer = load(source)
    tokenizer.save_pretrained(staging)
    base_path = _portable_base(source, staging, notes)
    config_path = staging / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_path
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    target = dtype or "float32"
    if dtype is not None:
        _cast_adapter(staging, dtype)
    return Exported(staging, "adapter", target, None, notes=notes)


def _portable_base(source: Source, staging: Path, notes: list[str]) -> str:
    """What the exported adapter_config.json names as its base, loadable wherever the export goes: a Hub id as
    it is; a local directory (the user's, or the run's base_model/ for a model built from a config or taken
    from a run) copied into the export's base_model/ and named relative to the export."""
    base = source.tuned.base
    if base.kind == "model":
        local = base.path
    elif base.spec.name_or_path is not None and Path(base.spec.name_or_path).is_dir():
        local = Path(base.spec.name_or_path)
    else:
        return base.spec.name_or_path  # a Hub id: recipe paths that exist were resolved to directories
    shutil.copytree(local, staging / "base_model", ignore=shutil.ignore_patterns(MARKER, "README.md"))
    notes.append(
        f"the base model ({local.name}) is copied into base_model/ in the export; adapter_config.json names it "
        f"{LOCAL_BASE} (relative to the export: load it from there, see its README.md)"
    )
    return LOCAL_BASE


def _cast_adapter(directory: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = directory / "adapter_model.safetensors"
    if not path.is_file():
        raise UserError("--dtype with --adapter-only needs adapter_model.safetensors in the run")
    weights = load_file(str(path))
    cast = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(cast, str(path), metadata={"format": "pt"})


def _check_adapter_export(source: Source, out: Path) -> Check:
    """Load the exported adapter as its card says (peft, on the base its adapter_config.json names; a base inside
    the export from there) and compare it with the run's adapter on its base."""
    config = read_adapter_config(out) or {}
    base_name = config.get("base_model_name_or_path")
    if not base_name:
        raise UserError(f"the exported adapter in {out} names no base model (base_model_name_or_path)")
    reward = source.is_reward_model
    reference_model, tokenizer = (export_reward.load_run_model if reward else _adapter_on_base)(source)
    if reward:
        prompts = export_reward.check_texts(source.recipe, tokenizer)
        reference = export_reward.scores(reference_model, prompts)
    else:
        prompts = check_prompts(source.recipe, tokenizer)
        reference = logits(reference_model, prompts)
    del reference_model
    trust = source.recipe.model.trust_remote_code
    try:
        if reward:
            exported = export_reward.load_exported_adapter(out, base_name, trust_remote_code=trust)
            measured = export_reward.scores(exported, prompts)
        else:
            exported = _load_exported_adapter(out, base_name, trust_remote_code=trust)
            measured = logits(exported, prompts)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(
            f"the exported adapter in {out} does not load with peft on its base: {describe(err)}"
        ) from err
    dtype = str(next(exported.parameters()).dtype).removeprefix("torch.")
    check = compare(reference, measured, dtype if dtype in DTYPES else "float32")
    check.measure = "scores" if reward else "logits"
    if not check.ok:
        raise UserError(
            f"the exported adapter in {out} gives {check.measure} up to {check.max_abs_diff:.3g} away from the "
            f"run's (tolerance {check.tolerance:.3g})"
        )
    return check


def _load_exported_adapter(directory: Path, base_name: str, *, trust_remote_code: bool = False):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    inside = directory / base_name
    base = AutoModelForCausalLM.from_pretrained(
        str(inside) if inside.is_dir() else base_name, trust_remote_code=trust_remote_code
    )
    return PeftModel.from_pretrained(base, str(directory)).eval()
