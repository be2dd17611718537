"""`grpo-cli export`: a training run -> a standalone Hugging Face model directory (or its adapter alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR",
            help="A training run's output directory, or a checkpoint-N inside one.",
            show_default=False,
        ),
    ],
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", "-o", metavar="DIR", help="Where to write the exported model.", show_default=False
        ),
    ],
    adapter_only: Annotated[
        bool,
        typer.Option(
            "--adapter-only",
            help="Write the LoRA adapter alone (loads with peft on its base) instead of merging it.",
        ),
    ] = False,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            metavar="DTYPE",
            help="float32, bfloat16 or float16. Default: the dtype the base model was saved in (float32 for "
            "a model built from a config); with --adapter-only, the adapter's own.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace a previous export in the output directory (never anything else)."
        ),
    ] = False,
) -> None:
    """Export a run as a model that loads with transformers alone: the adapter merged into its base, the
    tokenizer with its chat template, and a generation config that stops where training stopped.

    Works for GRPO, PPO and SFT runs, LoRA and full fine-tuning, and models built from a config (their base
    weights are in the run). A reward run exports as a one-label sequence classifier (score head kept) that
    loads with AutoModelForSequenceClassification alone, checked on its scores. With --adapter-only, a base
    that is a local directory is copied into the export's base_model/, so that the folder still loads when
    moved. Checks on the way out that the exported model, loaded back from disk, gives the run's
    logits on a few of the recipe's prompts. Writes a model card (README.md) ready for `hf upload`.

    Example: grpo-cli export runs/pipeline-grpo -o exported
    """
    import os
    import warnings

    from rich.console import Console

    from grpo_cli.workflows import export as exporting

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # transformers' deprecations inside peft's merge
    err_console = Console(stderr=True)
    result = exporting.export(
        run_dir,
        output_dir,
        adapter_only=adapter_only,
        dtype=dtype,
        overwrite=overwrite,
        note=lambda message: err_console.print(
            f"note: {message}", style="yellow", highlight=False, soft_wrap=True
        ),
    )
    what = {
        "merged": "the LoRA adapter merged into its base",
        "full": "the fully fine-tuned model",
        "adapter": "the LoRA adapter alone",
    }[result.kind]
    size = result.size_bytes / 2**20
    typer.echo(f"exported {what} ({result.dtype}) to {output_dir}: {len(result.files)} files, {size:.1f} MiB")
    check = result.check
    against = "the adapter on its base" if result.kind in ("merged", "adapter") else "the run's model"
    if check.measure == "scores":
        typer.echo(
            f"check: the exported reward model's scores match {against} on {check.prompts} preference texts "
            f"(max |diff| {check.max_abs_diff:.2g}, tolerance {check.tolerance:.2g})"
        )
    else:
        typer.echo(
            f"check: the exported model's logits match {against} on {check.prompts} prompts "
            f"(max |diff| {check.max_abs_diff:.2g}, tolerance {check.tolerance:.2g}; "
            f"same next token on {check.next_token_agreement}/{check.prompts})"
        )
    try_it = "" if check.measure == "scores" else f"; try it: grpo-cli generate {output_dir} --prompt ..."
    typer.echo(f"model card: {output_dir / 'README.md'}{try_it}")
