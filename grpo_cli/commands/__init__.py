"""One module per `grpo-cli` subcommand; `grpo_cli.cli` registers them."""
