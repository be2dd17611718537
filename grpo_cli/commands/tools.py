"""`grpo-cli tools ls`: the tools and environments a recipe can name."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from grpo_cli.errors import UserError


def ls(
    show: Annotated[
        bool, typer.Option("--show", help="Print the JSON schema each tool is sent to the model as.")
    ] = False,
) -> None:
    """List every tool and environment a recipe can name: built-ins and installed plugins."""
    from grpo_cli import tool_binding

    for registry in (tool_binding.TOOLS, tool_binding.ENVIRONMENTS):
        available = registry.available()
        typer.echo(f"{registry.kind}s:" + ("" if available else " none installed"))
        for name, spec in sorted(available.items()):
            typer.echo(_describe(registry.kind, name, spec, show))
    typer.echo(
        "\nalso: path/to/file.py:function (relative to the recipe) or package.module:function; an environment is "
        "a class (or a function making one) with reset(), tool methods and optionally get_reward()."
    )


def _describe(kind: str, name: str, spec, show: bool) -> str:
    from grpo_cli import tool_binding

    origin = f"from {spec.dist} ({spec.source})" if spec.dist else spec.origin
    lines = [f"  {name}  {origin}"]
    try:
        lines.append(f"      {spec.description or '(no docstring)'}")
        if kind == "tool":
            problem = tool_binding.schema_problem(spec.target, name)
            if problem:
                lines.append(f"      cannot be used: {problem}")
            elif show:
                schema = json.dumps(tool_binding.tool_schema(spec.target), indent=2)
                lines += ["      " + line for line in schema.splitlines()]
        else:
            methods, _reset, reward = tool_binding.environment_methods(spec.target)
            lines.append(
                f"      tools: {', '.join(sorted(methods)) or 'none'}; get_reward: {'yes' if reward else 'no'}"
            )
            if show:
                for method in methods.values():
                    schema = json.dumps(tool_binding.tool_schema(method), indent=2)
                    lines += ["      " + line for line in schema.splitlines()]
    except UserError as err:
        lines.append(f"      cannot be used: {err}")
    except Exception as err:  # a plugin's schema: transformers' error, said as the listing's line
        lines.append(f"      cannot be used: {err}")
    return "\n".join(lines)
