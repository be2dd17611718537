"""What one command does with one recipe or run (train it, evaluate it, export it, generate from it), called by the
commands in `grpo_cli/commands/` and by pipelines alike; below them, the algorithms, scoring, data and models."""
