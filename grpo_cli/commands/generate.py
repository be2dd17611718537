"""`grpo-cli generate`: try a trained (or base, or exported) model on prompts, a file of prompts, or in a chat."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.commands._common import print_table


def generate(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_OR_RUN",
            help="A training run (or checkpoint-N), an exported directory, a saved model or adapter, "
            "or a Hub id.",
            show_default=False,
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="KEY=VALUE",
            help="Changes to the recipe used (--recipe, else the run's own), e.g. trainer.temperature=0.7.",
            show_default=False,
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt",
            "-p",
            metavar="TEXT",
            help="A prompt (repeatable). Without --prompt or -f: a chat on stdin.",
            show_default=False,
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE",
            help='Prompts: a .txt file (one per line) or a .jsonl file ({"prompt": ...}, {"messages": [...]}, '
            "or the columns of the recipe's prompt template, plus columns the rewards read).",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        bool, typer.Option("--base", help="Try the base model the run (or export) started from.")
    ] = False,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            "-r",
            metavar="RECIPE",
            help="Prepare prompts and decode with this recipe, and score the outputs with its rewards. "
            "Default: the run's own recipe, without scoring.",
            show_default=False,
        ),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples",
            "-k",
            metavar="K",
            min=1,
            help="Completions per prompt: 1 is greedy unless --temperature is given.",
        ),
    ] = 1,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            "-t",
            metavar="T",
            min=0,
            help="Sample at this temperature (0: greedy). Default: greedy for one sample, the recipe's for "
            "more.",
            show_default=False,
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-new-tokens",
            metavar="N",
            min=1,
            help="Default: the recipe's max_completion_length (PPO: response_length).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", metavar="N", help="Sampling seed. Default: the recipe's.", show_default=False),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Completions generated per batch.")
    ] = 64,
) -> None:
    """Generate completions with a model, preparing prompts and decoding exactly as `eval` does.

    Prompts come from --prompt (repeatable) or -f FILE; with neither, each line on stdin is a chat turn: an
    interactive chat on a terminal (the chat template applied, history kept, /reset to clear it, Ctrl-D to end),
    or a scripted one from a pipe. A one-field prompt template (`prompt: "{question}"`) takes the typed text.

    Examples: grpo-cli generate runs/pipeline-grpo --prompt "12+34=" --prompt "7+8=";
    grpo-cli generate runs/pipeline-grpo --base --prompt "12+34="; grpo-cli generate exported -f prompts.jsonl
    """
    import os
    import warnings

    from rich.console import Console

    from grpo_cli.errors import UserError
    from grpo_cli.workflows import generate as generating

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings(
        "ignore", category=FutureWarning
    )  # transformers' deprecations inside peft's merge
    err_console = Console(stderr=True)

    def note(message: str) -> None:
        err_console.print(f"note: {message}", style="yellow", highlight=False, soft_wrap=True)

    target = generating.resolve(model, base=base, recipe=recipe, overrides=overrides or [])
    settings = generating.sampling(
        target.recipe,
        num_samples=num_samples,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    items = [{"text": text} for text in prompt or []]
    if prompts_file is not None:
        items += generating.read_prompt_file(prompts_file)
    if (prompt or prompts_file is not None) and not items:
        raise UserError(f"-f {prompts_file}: no prompts in it")
    how = "greedy" if settings.greedy else f"sampled at temperature {settings.temperature:g}"
    typer.echo(f"{target.source.describe()}: {how}, up to {settings.max_new_tokens} new tokens", err=True)
    loaded, tokenizer = generating.load_target(target)

    if not items:
        interactive = sys.stdin.isatty()
        if interactive:
            typer.echo("chat: type a message; /reset clears the history, Ctrl-D ends", err=True)

        def read_line() -> str | None:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                return None
            if not interactive:
                typer.echo(f"> {line}")  # a transcript of a scripted chat
            return line

        generating.chat(target, loaded, tokenizer, settings, read_line, typer.echo, note)
        return

    tried = generating.run(
        target, loaded, tokenizer, items, settings, rewards=recipe is not None, batch_size=batch_size
    )
    if tried.reward_names:
        print_table(_scores_table(tried))
        return
    for row, group in zip(tried.rows, tried.samples, strict=True):
        typer.echo(f">>> {generating.shown(row['prompt'])}")
        for sample in group:
            prefix = f"[{sample.sample_index + 1}] " if len(group) > 1 else ""
            typer.echo(prefix + "\n".join(generating.transcript(sample)))


def _scores_table(tried):
    from rich.table import Table

    from grpo_cli.workflows import generate as generating

    table = Table()
    for column in ("prompt", "completion", *tried.reward_names, "total"):
        table.add_column(column, justify="left" if column in ("prompt", "completion") else "right")
    for row, group in zip(tried.rows, tried.samples, strict=True):
        for sample in group:
            scores = [sample.scores.get(name) for name in tried.reward_names]
            cells = ["-" if s is None else f"{s:g}" for s in [*scores, sample.total]]
            table.add_row(repr(generating.shown(row["prompt"])), repr(sample.text), *cells)
    return table
