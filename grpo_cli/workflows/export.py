"""`grpo-cli export`: a run (or one of its `checkpoint-N/`) -> a standalone Hugging Face model directory.

Merged (the default): the base model with the LoRA adapter merged in (or the fully fine-tuned model), saved with
`save_pretrained` (safetensors, sharded as transformers shards), the run's tokenizer with its chat template, and a
generation config that stops on the EOS ids used in training and keeps pad/unk/bos out as training did. It loads
with `AutoModelForCausalLM` alone: no grpo-cli, no peft. `--adapter-only`: the peft adapter, with an
`adapter_config.json` whose `base_model_name_or_path` points at a base that exists (a model built from a config
has its initial weights copied into the export's `base_model/`).

How the output directory is treated, with the same care as `train`'s:
- Built in a staging directory beside it and moved into place at the end: an export appears whole or not at all.
- An existing non-empty directory is replaced only with `--overwrite`, and only when it holds this module's
  marker file (`MARKER`): a directory of anything else is never deleted, nor one that holds the source run.

Checked on the way out: the exported model, loaded back from disk as a user would load it, gives the same
logits as the adapter on its base (or the run's full model) on a few of the recipe's prompts, within a
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
from typing import Any

from grpo_cli import __version__, data, models, prompting
from grpo_cli.devices import default_device
from grpo_cli.errors import UserError, describe
from grpo_cli.generation import eos_ids, suppressed_special_tokens
from grpo_cli.model_sources import ModelSource, resolve_models, run_root
from grpo_cli.models import TOKENIZER_FILES, load_source
from grpo_cli.recipe import Recipe, load_recipe
from grpo_cli.run_dir import last_checkpoint
from grpo_cli.run_files import EXPORT_MARKER_FILE as MARKER  # says a directory holds an export to replace
from grpo_cli.run_files import atomic_write, read_adapter_config

DTYPES = ("float32", "bfloat16", "float16")
# Largest |logit difference| accepted, relative to max(1, largest |logit|): merging reorders float sums, and a
# lower precision rounds every weight.
TOLERANCE = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 1e-1}
CHECK_PROMPTS = 4
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


@dataclass
class Check:
    """The exported model against the run's model on a few prompts."""

    prompts: int
    max_abs_diff: float
    tolerance: float
    next_token_agreement: int  # prompts whose most likely next token is the same

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "max_abs_logit_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "next_token_agreement": self.next_token_agreement,
            "ok": self.ok,
        }


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
            result = _export_adapter(source, staging, out, dtype)
        else:
            result = _export_merged(source, staging, dtype)
        from grpo_cli import model_card

        model_card.write_export_card(
            staging, source.path, kind=result.kind, base=_card_base(source, out, result)
        )
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
        _readable_by_others(staging)
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


def _readable_by_others(directory: Path) -> None:
    """An export is made to be shared: safetensors writes its files private (0600); give them the umask's mode."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


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
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except OSError as err:
        raise UserError(f"cannot write the export: {describe(err)}") from err
    del model
    gc.collect()
    exported = _from_pretrained(staging)
    check = compare(reference, logits(exported, prompts), target)
    if not check.ok:
        raise UserError(
            f"the exported model's logits differ from the run's by up to {check.max_abs_diff:.3g} "
            f"(tolerance {check.tolerance:.3g} for {target}) on {check.prompts} prompts; nothing was written"
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
    tokenizer = models.load_tokenizer(str(source.path)) if _has_tokenizer(source.path) else base_tokenizer
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


def _from_pretrained(directory: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype="auto")
    return model.to(default_device()).eval()


# ---- adapter only ----


def _export_adapter(source: Source, staging: Path, out: Path, dtype: str | None) -> Exported:
    notes = []
    for name in ADAPTER_FILES:
        if (source.path / name).is_file():
            shutil.copy2(source.path / name, staging / name)
    _, tokenizer = _adapter_on_base(source)  # also proves the adapter loads on its base
    tokenizer.save_pretrained(staging)
    base = source.tuned.base
    if base.kind == "model" and base.path is not None and base.path.parent == source.run_dir:
        # A model built from a config: its initial weights exist only in the run; the export carries them.
        shutil.copytree(base.path, staging / "base_model")
        base_path = str(out.resolve() / "base_model")
        notes.append(
            f"the base model's weights are in {out / 'base_model'}; adapter_config.json points there"
        )
    elif base.kind == "model":
        base_path = str(base.path)
    else:
        base_path = base.spec.name_or_path
    config_path = staging / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_path
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    target = dtype or "float32"
    if dtype is not None:
        _cast_adapter(staging, dtype)
    return Exported(staging, "adapter", target, None, notes=notes)


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
    """Load the exported adapter as a user would (peft, on the base its adapter_config.json names)."""
    from peft import AutoPeftModelForCausalLM

    reference_model, tokenizer = _adapter_on_base(source)
    prompts = check_prompts(source.recipe, tokenizer)
    reference = logits(reference_model, prompts)
    del reference_model
    try:
        exported = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(
            f"the exported adapter in {out} does not load with peft on its base: {describe(err)}"
        ) from err
    config = read_adapter_config(out) or {}
    dtype = str(next(exported.parameters()).dtype).removeprefix("torch.")
    check = compare(reference, logits(exported, prompts), dtype if dtype in DTYPES else "float32")
    if config.get("base_model_name_or_path") is None or not check.ok:
        raise UserError(
            f"the exported adapter in {out} gives logits up to {check.max_abs_diff:.3g} away from the run's "
            f"(tolerance {check.tolerance:.3g})"
        )
    return check


# ---- the logits check ----


def check_prompts(recipe: Recipe, tokenizer) -> list[list[int]]:
    """Token ids of a few of the recipe's prompts, prepared as in training (a named held-out split's, else the
    first rows); fixed texts when the dataset cannot be read here (e.g. a Hub dataset offline)."""
    try:
        # Nothing is split: a generated task makes only these rows; a local file is still parsed whole and a
        # Hub split loaded whole (from its cache), as reading its first rows alone would need another reader.
        rows = data.first_rows(recipe.dataset, CHECK_PROMPTS)
        rows = prompting.prepare(rows, recipe.dataset, tokenizer)
        ids = prompting.tokenize_prompts(tokenizer, list(rows["prompt"]))
    except Exception:  # any failure to read the data: the check still runs on fixed texts
        ids = []
    ids = [row for row in ids if row]
    if not ids:
        texts = ["1+2=", "Hello, how are you?", "The capital of France is", "def add(a, b):"]
        ids = [row for row in tokenizer(texts)["input_ids"] if row]
    return ids[:CHECK_PROMPTS]


def logits(model, prompts: list[list[int]]) -> list:
    """The last position's logits for each prompt (one at a time: no padding to get wrong), in float32 on the CPU."""
    import torch

    outputs = []
    with torch.inference_mode():
        for ids in prompts:
            input_ids = torch.tensor([ids], device=model.device)
            outputs.append(model(input_ids=input_ids).logits[0].float().cpu())
    return outputs


def compare(reference: list, exported: list, dtype: str) -> Check:
    worst, agree, scale = 0.0, 0, 1.0
    for a, b in zip(reference, exported, strict=True):
        worst = max(worst, float((a - b).abs().max()))
        scale = max(scale, float(a.abs().max()))
        agree += int(a[-1].argmax() == b[-1].argmax())
    return Check(len(reference), worst, TOLERANCE[dtype] * scale, agree)


def _card_base(source: Source, out: Path, result: Exported) -> str | None:
    """The base an adapter export names (the path in its adapter_config.json)."""
    if result.kind != "adapter":
        return None
    return (read_adapter_config(result.directory) or {}).get("base_model_name_or_path")
