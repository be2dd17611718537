"""The tokenizers of models built from a config (`model.from_config`): one token per character of `vocabulary`,
plus whole strings (`tokens`) each one token, and optionally a chat template TRL ships (`chat_template`).

A chat template's fixed text (markup such as `<|im_start|>`, the tool list it renders) would cost a character
model hundreds of tokens a prompt; listed in `tokens` each piece is one token, as real tokenizers have special
tokens for their markup. Tokens are matched before characters, longest first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpo_cli.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from grpo_cli.recipe import FromConfig

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def char_tokenizer(
    vocabulary: str, tokens: list[str] | tuple[str, ...] = (), eos: str | None = None
) -> PreTrainedTokenizerBase:
    """A tokenizer with one token per character of `vocabulary` and one per string of `tokens`, plus pad, unk and
    eos (`eos` when given: one of `tokens`, e.g. a chat template's end of turn; pad differs from eos)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(vocabulary))
    words = [t for t in dict.fromkeys(tokens) if t not in chars]
    eos = eos or EOS
    vocab = {token: i for i, token in enumerate(dict.fromkeys([PAD, EOS, UNK, *chars]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    # Not special (a decode that skips special tokens keeps them: TRL parses tool calls out of it), except eos.
    backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in words if t != eos])
    if eos != EOS:
        backend.add_special_tokens([AddedToken(eos, normalized=False, special=True)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=eos, unk_token=UNK, padding_side="left"
    )


def config_tokenizer(spec: FromConfig) -> PreTrainedTokenizerBase:
    """The tokenizer `model.from_config` describes, with its chat template (one TRL ships) when it names one."""
    if spec.eos_token is not None and spec.eos_token not in spec.tokens:
        raise UserError(
            f"model.from_config.eos_token: {spec.eos_token!r} is not in model.from_config.tokens; add it there"
        )
    tokenizer = char_tokenizer(spec.vocabulary, spec.tokens, spec.eos_token)
    if spec.chat_template is not None:
        from trl import chat_template_utils

        tokenizer.chat_template = getattr(chat_template_utils, f"{spec.chat_template}_chat_template")
    return tokenizer


def saved_as_backend(name_or_path: str) -> bool:
    """Whether `name_or_path` is a local directory whose tokenizer_config.json names the class transformers gives a
    tokenizer made from a tokenizers object (as `char_tokenizer`'s are saved)."""
    import json
    from pathlib import Path

    settings = Path(name_or_path).expanduser() / "tokenizer_config.json"
    try:
        declared = json.loads(settings.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False
    return declared == "TokenizersBackend"
