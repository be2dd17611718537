"""The classes of issue 23's items 1-6 as fuzz-corpus cases (kind `issue23`), each with its one expected outcome: the
exit code, and for a refusal a fragment of the line that says what is wrong.

Not here, as validate still accepts them: numeric strings (`max_steps: "5"`; the loader hands
trainer_fields.check_value strings it must coerce, `1e-5` among them). Item 3's import that loops and `os._exit()` at import are not here: the corpus runs validate in-process (an
`os._exit` would end the runner, and the import guard's 60 s timeout shares SIGALRM with the runner's).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from grpo_cli import distributed

LONG = "a" * 300  # one path part over the 255 bytes a file system allows
TINY = {
    "model": {"from_config": {"vocabulary": "0123456789+="}},
    "dataset": {"generate": {"task": "addition"}, "prompt": "{question}"},
    "rewards": [{"name": "accuracy"}],
}


def _with(**changes) -> dict:
    return json.loads(json.dumps({**TINY, **changes}))


def _bomb() -> bytes:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join([*lines, "extra: *a8", ""]).encode()


def _plugin(body: str) -> dict:
    code = f"{body}\ndef r(completions, **kw):\n    return [0.0] * len(completions)\n"
    return {"recipe.yaml": _with(rewards=[{"name": "./plugin.py:r"}]), "plugin.py": code.encode()}


def _local(rows: bytes, name: str = "rows.jsonl", **dataset) -> dict:
    return {"recipe.yaml": _with(dataset={"source": name, "prompt": "{question}", **dataset}), name: rows}


def cases(recipes_dir: Path) -> list[tuple[str, dict, list[str], int, str | None]]:
    """(what, files, overrides, exit, says) for each case."""
    addition = (recipes_dir / "addition.yaml").read_bytes()
    ppo = (recipes_dir / "addition-ppo.yaml").read_bytes()
    sft = (recipes_dir / "pipeline" / "sft.yaml").read_bytes()
    ppo_stage = (recipes_dir / "pipeline" / "ppo.yaml").read_bytes()
    reward_stage = (recipes_dir / "pipeline" / "reward.yaml").read_bytes()
    not_a_number = "(true/false is no number)"
    out: list[tuple[str, dict, list[str], int, str | None]] = []

    def add(what, files, overrides=(), exit=2, says=None):
        out.append((what, files, list(overrides), exit, says))

    def override(recipe: bytes, item: str, says: str | None):
        name = "ppo " if recipe is ppo else "sft " if recipe is sft else ""
        add(f"{name}{item}", {"recipe.yaml": recipe}, item.split(" "), 0 if says is None else 2, says)

    # 1. What gave tracebacks.
    override(addition, "x[0]=1", "x[0]: unknown key")
    override(addition, "rewards[0].weight=2", "rewards[0]: unknown key")
    for key in ("model.name_or_path", "dataset.source", "output_dir"):
        override(addition, f"{key}={LONG}", f"{key}: has a part longer than 255 bytes")
    add(
        "reward name of 300 characters",
        {"recipe.yaml": _with(rewards=[{"name": LONG}])},
        says="rewards[0].name: has a part longer than 255 bytes",
    )
    add(
        "a 5000-digit integer in a jsonl row",
        _local(b'{"question": "1+1=", "answer": ' + b"9" * 5000 + b"}\n"),
        says="invalid JSON: Exceeds the limit (4300 digits)",
    )
    # 2. What took minutes: refused in well under a second.
    add(
        "alias bomb, 9 levels of 9",
        {"recipe.yaml": _bomb()},
        says="values once its aliases (*name) are expanded",
    )
    add("a recipe of comments over 1 MiB", {"recipe.yaml": b"# a comment\n" * 100_000}, says="over 1 MiB")
    add("a 2 MiB string", {"recipe.yaml": b"seed: 0\nnote: " + b"x" * (2 << 20) + b"\n"}, says="over 1 MiB")
    unknown = "".join(f"  unknown_{i}: 1\n" for i in range(5000)).encode()
    add(
        "5000 unknown keys",
        {"recipe.yaml": b"model:\n  from_config: {vocabulary: '0123456789+='}\n" + unknown},
        says="more (fix these and validate again)",
    )
    add(
        "nesting 100 deep",
        {"recipe.yaml": b"a: " + b"[" * 100 + b"]" * 100 + b"\n"},
        says="nested more than 64",
    )
    add(
        "a pipeline of 1000 stages",
        {
            "recipe.yaml": ("stages: [" + ", ".join(["s.yaml"] * 1000) + "]\n").encode(),
            "s.yaml": b"algorithm: sft\n",
        },
        says="1000 stages; a pipeline has at most 50",
    )
    add(
        "a pipeline listing a stage twice",
        {"recipe.yaml": b"stages: [s.yaml, s.yaml]\n", "s.yaml": sft},
        says="stage 's.yaml' is listed twice",
    )
    # 3. User code at validate: an exit or an error while imported is one line, exit 2, naming the file.
    for call in ("sys.exit(0)", "sys.exit(3)", "raise SystemExit('bye')"):
        add(f"plugin calling {call} at import", _plugin(f"import sys\n{call}"), says="plugin.py")
    add("plugin raising at import", _plugin("raise RuntimeError('broken plugin')"), says="broken plugin")
    add("plugin that imports fine", _plugin("import math"), exit=0)
    # 4. Accepted nonsense: one line, exit 2, with the valid range.
    for recipe, item, says in [
        (
            addition,
            "trainer.max_steps=0",
            "trainer.max_steps: must be at least 1 (or -1: train num_train_epochs)",
        ),
        (ppo, "trainer.max_steps=-3", "trainer.max_steps: must be at least 1"),
        (sft, "trainer.max_length=0", "trainer.max_length: must be at least 1, got 0"),
        (addition, "lora.target_modules=[]", "lora.target_modules: an empty list adapts nothing"),
        (addition, "lora.target_modules=[nope]", "lora.target_modules: 'nope' matches no module"),
        (addition, "lora.target_modules=[q_proj]", None),
        (addition, "trainer.beta=-0.1", "trainer.beta: must be at least 0, got -0.1"),
        (addition, "trainer.epsilon=-1", "trainer.epsilon: must be at least 0, got -1"),
        (addition, "trainer.top_k=-5", "trainer.top_k: must be at least 0, got -5"),
        (ppo, "trainer.kl_coef=-1", "trainer.kl_coef: must be at least 0, got -1"),
        (ppo, "trainer.cliprange=-0.2", "trainer.cliprange: must be at least 0, got -0.2"),
        (ppo, "trainer.vf_coef=-1", "trainer.vf_coef: must be at least 0, got -1"),
        (ppo, "trainer.gamma=2", "trainer.gamma: must be at most 1, got 2"),
        (ppo, "trainer.lam=-1", "trainer.lam: must be at least 0, got -1"),
        (addition, "trainer.fp16=true trainer.bf16=true", "trainer: give fp16 or bf16, not both"),
        (
            addition,
            "trainer.learning_rate=true",
            f"trainer.learning_rate: expected float, got True {not_a_number}",
        ),
        (addition, "trainer.max_steps=true", f"trainer.max_steps: expected int, got True {not_a_number}"),
    ]:
        override(recipe, item, says)
    override(
        addition, "trainer.fp16=true", None if distributed.gpu_present() else "half precision needs a GPU"
    )
    has = {name: importlib.util.find_spec(name) is not None for name in ("vllm", "wandb")}
    override(addition, "trainer.use_vllm=true", None if has["vllm"] else "vLLM is not installed")
    override(addition, "trainer.report_to=wandb", None if has["wandb"] else "wandb is not installed")
    for name, says in [
        ("model:/nonexistent/reward-model", "/nonexistent/reward-model does not exist"),
        ("model:/etc", "/etc holds no model (no config.json)"),
        ("model:plugin.py", "is a file; give a saved reward model's directory"),
    ]:
        files = {"recipe.yaml": _with(rewards=[{"name": name}]), "plugin.py": b"x = 1\n"}
        add(f"reward {name}", files, says=says)
    add(
        "pipeline [sft, ppo] without the reward stage",
        {
            "recipe.yaml": b"stages: [sft.yaml, ppo.yaml]\n",
            "sft.yaml": sft,
            "ppo.yaml": ppo_stage,
        },
        says="no earlier stage writes",
    )
    add(
        "pipeline [sft, reward, ppo]",
        {
            "recipe.yaml": b"stages: [sft.yaml, reward.yaml, ppo.yaml]\n",
            "sft.yaml": sft,
            "reward.yaml": reward_stage,
            "ppo.yaml": ppo_stage,
        },
        exit=0,
    )
    # 5. Accepted, then train crashed: validate refuses what train would.
    rows = b"question,answer\n1+1=,2\n2+2=,4\n" * 8
    add("csv with an unterminated quote", _local(rows + b'"3+3=,6\n', "rows.csv"), says="rows.csv")
    add("csv with ragged rows", _local(rows + b"3+3=,6,extra\n", "rows.csv"), says="rows.csv")
    add("csv that is fine", _local(rows, "rows.csv"), exit=0)
    pairs = b"".join(
        json.dumps({"prompt": f"{i}+1=", "chosen": i + 1, "rejected": "x"}).encode() + b"\n"
        for i in range(64)
    )
    reward = {"algorithm": "reward", "model": TINY["model"], "dataset": {"source": "pairs.jsonl"}}
    add(
        "reward data with numeric chosen",
        {"recipe.yaml": reward, "pairs.jsonl": pairs},
        says="dataset: column 'chosen' holds int values",
    )
    add(
        "async reward",
        {
            "recipe.yaml": _with(rewards=[{"name": "./plugin.py:r"}]),
            "plugin.py": b"async def r(completions, **kw):\n    return [0.0] * len(completions)\n",
        },
        exit=0,
    )
    # 6. Fewer rows than one step takes: refused with the numbers, never "done: 0 steps".
    override(
        addition,
        "dataset.limit=10",
        "dataset: 10 training prompts, fewer than the 44 one GRPO generation takes",
    )
    override(
        ppo, "dataset.limit=10", "dataset: 10 training rows, fewer than the 64 prompts one PPO step samples"
    )
    override(addition, "dataset.limit=200", None)
    return out
