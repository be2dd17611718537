"""The built-in tools a recipe's `tools:` can name (`grpo-cli tools ls`): each module's `__all__`."""
