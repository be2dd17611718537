"""The `grpo-cli` command line: registers the subcommands and holds the one top-level error handler.

Subcommands import torch, trl and friends inside their functions, so `--help` and `validate` stay instant.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import typer
from typer.core import TyperCommand

from grpo_cli import descendants
from grpo_cli.commands import recipes, rewards, tools
from grpo_cli.commands.eval import evaluate
from grpo_cli.commands.export import export
from grpo_cli.commands.generate import generate
from grpo_cli.commands.report import report
from grpo_cli.commands.sweep import sweep
from grpo_cli.commands.train import train
from grpo_cli.commands.validate import validate
from grpo_cli.errors import Stop, UserError
from grpo_cli.interrupts import Interrupted

app = typer.Typer(
    name="grpo-cli",
    help="Fine-tune language models with reinforcement learning (GRPO, PPO) on your own rewards, from a YAML recipe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain Click help, which rewraps paragraphs to the terminal: "markdown" swallowed `<recipe name>`-style
    # placeholders as HTML tags, and "rich" breaks every docstring line where the source does.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def handle_errors(command):
    """A user's mistake -> one line on stderr and exit code 2; a traceback only with GRPO_CLI_DEBUG=1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            if os.environ.get("GRPO_CLI_DEBUG") == "1":
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except Stop as stop:  # what happened is said already
            raise typer.Exit(stop.exit_code) from None
        except (KeyboardInterrupt, Interrupted) as stop:
            raise typer.Exit(_interrupted(stop)) from None

    return wrapper


def _interrupted(stop: BaseException) -> int:
    """A signal the command did not handle itself: one line, and 130 (SIGINT) or 143 (SIGTERM)."""
    import signal

    from grpo_cli import interrupts

    signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
    with interrupts.held():  # a second signal does not cut this short
        typer.echo(f"interrupted ({signal.Signals(signum).name})", err=True)
    return 128 + signum


def version_line() -> str:
    """`grpo-cli 0.1.0 (trl 1.12.0, transformers ..., torch ...)`, read from package metadata: no torch import."""
    from importlib import metadata

    from grpo_cli import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} not installed"

    return f"grpo-cli {__version__} ({', '.join(installed(n) for n in ('trl', 'transformers', 'torch'))})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of grpo-cli, trl, transformers and torch, and exit.",
        ),
    ] = False,
) -> None:
    pass


def _argument_name(param) -> str:
    return (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")


class _Command(TyperCommand):
    """Arguments named as the README writes them: `RECIPE [KEY=VALUE]...` in the usage line and `RECIPE` in the
    Arguments section, where Typer writes `{RECIPE}` and adds the Python type (`RECIPE <str>`)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                pieces.extend(param.get_usage_pieces(ctx))
                continue
            name = param.metavar or param.name.upper()
            pieces.append((name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _register(typer_app: typer.Typer, command, name: str | None = None) -> None:
    typer_app.command(name=name, cls=_Command)(handle_errors(command))


_register(app, train)
_register(app, validate)
_register(app, evaluate, "eval")
_register(app, report)
_register(app, export)
_register(app, generate)
_register(app, sweep)

recipes_app = typer.Typer(help="List, show and copy the shipped recipes.", no_args_is_help=True)
_register(recipes_app, recipes.ls, "ls")
_register(recipes_app, recipes.show, "show")
_register(recipes_app, recipes.cp, "cp")
app.add_typer(recipes_app, name="recipes")

rewards_app = typer.Typer(
    help="List reward plugins and score completions without training.", no_args_is_help=True
)
_register(rewards_app, rewards.ls, "ls")
_register(rewards_app, rewards.test, "test")
app.add_typer(rewards_app, name="rewards")

tools_app = typer.Typer(
    help="List the tools and environments a recipe can give the model.", no_args_is_help=True
)
_register(tools_app, tools.ls, "ls")
app.add_typer(tools_app, name="tools")


def main() -> None:
    # What a reward (or anything else) started and left running dies with this process instead of holding the
    # caller's pipes open: on Linux it is re-parented here and killed at exit (see grpo_cli.descendants).
    descendants.adopt_orphans()
    try:
        app(prog_name="grpo-cli")
    except Interrupted as stop:  # outside a command (parsing its arguments, exiting): Click does not see it
        sys.exit(_interrupted(stop))


if __name__ == "__main__":
    sys.exit(main())
