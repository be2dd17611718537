"""Acme's reward plugins for grpo-cli: a function and a class, registered as entry points in pyproject.toml."""


def shouting_reward(completions, min_ratio: float = 0.5, **kwargs) -> list[float]:
    """1.0 when at least `min_ratio` of the letters are capitals, else 0.0."""
    scores = []
    for completion in completions:
        letters = [c for c in completion if c.isalpha()]
        capitals = sum(c.isupper() for c in letters)
        scores.append(1.0 if letters and capitals / len(letters) >= min_ratio else 0.0)
    return scores


class OnTopic:
    """1.0 when the completion mentions the row's topic (case-insensitive), else 0.0."""

    def __init__(self, topic_column: str = "topic", bonus: float = 0.0):
        self.topic_column = topic_column
        self.bonus = bonus

    def __call__(self, prompts, completions, **columns) -> list[float]:
        topics = columns[self.topic_column]
        return [
            1.0 + self.bonus if topic.lower() in completion.lower() else 0.0
            for completion, topic in zip(completions, topics, strict=True)
        ]
