"""A model laid out like the ones users bring: a byte-level BPE tokenizer with a ChatML chat template and a small
Qwen2, saved with `save_pretrained` and loaded back through `model.name_or_path` as a Hub model would be.

The char-level models built from a config (the quickstart, the fast tests) have a one-token-per-character
vocabulary with `<pad>`/`<eos>`/`<unk>` and no chat template. Real chat models differ in ways that have broken
things before, so this one copies Qwen2.5-Instruct's special-token layout on purpose:

- byte-level BPE (merges trained here on a generated corpus): one token spans several characters, a digit run may
  be one token or several, and a space belongs to the token after it;
- no unk token and no bos token (`tokenizer.unk_token is None`, as in Qwen2.5);
- EOS is `<|im_end|>` (the end of a chat turn), pad is a different token, `<|endoftext|>`;
- the generation config stops at either of them (`eos_token_id: [im_end, endoftext]`), while `config.json`'s own
  `eos_token_id` is only `<|im_end|>`: the two disagree in the real model too;
- a ChatML template that adds a default system message when the conversation has none.

Everything is built in code from fixed seeds: no download, the same files on every machine.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2.5-Instruct's template without its tool-calling branches (this model has no tools).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# GPT-2/Qwen2's pre-tokenization: contractions, letters, single digits, punctuation runs, whitespace.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

VOCAB_SIZE = 512  # 256 byte tokens, 3 special tokens, the rest merges
SYSTEM_PROMPT = "Solve the problem. Show the sum, then write the answer after ####."


@dataclass(frozen=True)
class RealisticModel:
    """The saved files: a policy (`policy/`), a reward model (`reward_model/`) and a chat dataset."""

    policy: Path
    reward_model: Path
    train_data: Path
    eval_data: Path

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.policy)


def word_problem(a: int, b: int, rng: random.Random) -> tuple[str, str]:
    """One addition word problem and its GSM8K-style worked answer."""
    name = rng.choice(["Ana", "Ben", "Chen", "Dara", "Eli", "Fay"])
    thing = rng.choice(["apples", "books", "coins", "pens", "shells"])
    question = f"{name} has {a} {thing} and finds {b} more. How many {thing} does {name} have now?"
    return question, f"{name} has {a} + {b} = {a + b} {thing}.\n#### {a + b}"


def chat_rows(count: int, seed: int) -> list[dict]:
    """Rows with a `messages` column (system, user, and the reference assistant turn) and an `answer` column."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question, worked = word_problem(a, b, rng)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": worked},
                ],
                "answer": str(a + b),
            }
        )
    return rows


def corpus(seed: int = 0) -> list[str]:
    """What the BPE merges are learned from: the chat rows rendered as ChatML, plus plain sentences."""
    rows = chat_rows(400, seed)
    texts = []
    for row in rows:
        texts.append("".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in row["messages"]))
    rng = random.Random(seed + 1)
    words = ["the", "a", "of", "to", "and", "is", "in", "it", "you", "that", "was", "for", "on", "with"]
    texts += [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(200)]
    return texts


def build_tokenizer(seed: int = 0):
    """A byte-level BPE tokenizer trained here, wrapped as transformers' fast tokenizer, with Qwen2.5's tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unk token needed
        show_progress=False,
    )
    backend.train_from_iterator(corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        padding_side="right",  # Qwen2.5 ships right padding; grpo-cli must set left itself for generation
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen2_config(tokenizer, **sizes):
    from transformers import Qwen2Config

    settings = {
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention, as Qwen2.5 has
        "max_position_embeddings": 512,
        **sizes,
    }
    return Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),  # as in Qwen2.5's config.json
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,  # Qwen2.5's config.json has none; the tokenizer and generation config do
        **settings,
    )


def build_policy(tokenizer, seed: int = 0):
    """A randomly initialised Qwen2 causal LM (about 210k parameters) with Qwen2.5's generation config."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(tokenizer))
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[tokenizer.eos_token_id, endoftext],  # stops at either, as Qwen2.5-Instruct does
        pad_token_id=endoftext,
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    return model


def build_reward_model(tokenizer, seed: int = 1):
    """A randomly initialised one-label Qwen2 sequence classifier on the same tokenizer (a reward model)."""
    import torch
    from transformers import Qwen2ForSequenceClassification

    torch.manual_seed(seed)
    config = qwen2_config(tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id  # it scores the last token that is not padding
    return Qwen2ForSequenceClassification(config)


def reward_model_scores(path: Path, conversations: list[list[dict]]) -> list[float]:
    """The reward model's score of each whole conversation, computed directly with transformers: the chat template
    rendered as text, tokenized without added special tokens, the logit at the last token. What grpo-cli's
    `model:` reward is expected to give for a chat prompt and its completion."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    scores = []
    with torch.inference_mode():
        for messages in conversations:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            scores.append(model(**ids).logits[0, 0].item())
    return scores


def save_tokenizer(tokenizer, directory: Path) -> None:
    """Save it as Qwen2.5's files have it: `tokenizer_class: Qwen2Tokenizer` and explicit null unk and bos.

    transformers writes a tokenizer built from a `tokenizers` object as `TokenizersBackend` and leaves unset tokens
    out; AutoTokenizer then picks Qwen2Tokenizer from config.json, whose constructor defaults unk to
    `<|endoftext|>`. The real tokenizer_config.json says null, so the loaded tokenizer has no unk token at all.
    """
    tokenizer.save_pretrained(directory)
    path = directory / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings.update(tokenizer_class="Qwen2Tokenizer", unk_token=None, bos_token=None)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build(directory: Path, seed: int = 0) -> RealisticModel:
    """Save the tokenizer, policy, reward model and chat dataset under `directory`."""
    tokenizer = build_tokenizer(seed)
    policy_dir, reward_dir = directory / "policy", directory / "reward_model"
    build_policy(tokenizer, seed).save_pretrained(policy_dir)
    save_tokenizer(tokenizer, policy_dir)
    build_reward_model(tokenizer, seed + 1).save_pretrained(reward_dir)
    save_tokenizer(tokenizer, reward_dir)
    return RealisticModel(
        policy=policy_dir,
        reward_model=reward_dir,
        train_data=write_jsonl(directory / "train.jsonl", chat_rows(48, seed + 10)),
        eval_data=write_jsonl(directory / "test.jsonl", chat_rows(6, seed + 20)),
    )
