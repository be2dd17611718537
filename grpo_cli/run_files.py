"""The files a run writes as it trains, each with its one writer and its one reader.

Layout (shared by every algorithm, so `eval` and `report` treat runs alike):
    run.json           the marker (see `run_dir`): the algorithm, written before any other run file
    recipe.yaml        the resolved recipe
    metrics.jsonl      one JSON line per logged step, with the same names for every algorithm (METRIC_NAMES)
    summary.json       steps, wall time, first and last mean reward (written at the end; the same keys always)
    checkpoint-N/      TRL/transformers checkpoints (see `run_dir`), each with transformers' trainer_state.json
    base_model/        the initial weights, when the model was built from a config (nothing else has them)
    adapter_* / model  the trained adapter (adapter_config.json: peft's) or full model, and the tokenizer
    eval/eval.json     what `eval RUN` measured last (written by eval, read by the model card)
An export (`grpo-cli export`) holds grpo-cli-export.json, its marker: where it came from, and the run's recipe.

One rule for every reader: a file that is absent reads as None (or no rows); a file that is there but does not
parse is the user's to repair, and says so. The exception is metrics.jsonl's last line, which a run still
training may be halfway through writing: it is skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from grpo_cli.algorithms.table import ALGORITHMS, RunKind
from grpo_cli.errors import UserError

# Trainer log keys -> the names metrics.jsonl uses for both algorithms. Other keys are kept as they are.
METRIC_NAMES = {
    # GRPO (trl.GRPOTrainer)
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "loss": "loss",
    "entropy": "entropy",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    # PPO (trl.experimental.ppo.PPOTrainer)
    "objective/scores": "reward",
    "objective/kl": "kl",
    "objective/entropy": "entropy",
    "loss/policy_avg": "loss",
    "lr": "learning_rate",
    # SFT (trl.SFTTrainer): loss, entropy and learning_rate as above
    "mean_token_accuracy": "token_accuracy",
    # Reward models (trl.RewardTrainer): how often chosen outscores rejected, and by how much
    "accuracy": "pairwise_accuracy",
    "margin": "margin",
}


def atomic_write(path: Path, content: str | Callable[[IO[bytes]], Any]) -> None:
    """Write a file so that readers see the old content or the new, never half of it.

    `content` is the text, or a function that writes bytes to the open file. Not tempfile.mkstemp: its files
    are private (0600), and run files are made to be read by others. An OSError becomes a one-line UserError.
    """
    atomic_write_all({path: content})


def atomic_write_all(contents: dict[Path, str | Callable[[IO[bytes]], Any]]) -> None:
    """Write several files that belong together (eval.json and its samples) so that readers see all the old ones
    or all the new ones: each is written beside its place first, then all are moved in with SIGINT and SIGTERM
    held back, so a signal cannot fall between two of the moves."""
    temporaries = {
        path: path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp") for path in contents
    }
    current = None
    try:
        for path, content in contents.items():
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporaries[path], "xb") as f:
                if callable(content):
                    content(f)
                else:
                    f.write(content.encode("utf-8"))
        with _signals_deferred():
            for path, temporary in temporaries.items():
                current = path
                os.replace(temporary, path)
    except BaseException as err:
        for temporary in temporaries.values():
            with contextlib.suppress(OSError):  # never written, or its folder cannot be one
                temporary.unlink()
        if isinstance(err, OSError):
            raise UserError(f"cannot write {current}: {err.strerror or err}") from err
        raise


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM that arrive inside the block are handled when it ends. Python runs signal handlers in the
    main thread whichever thread the kernel hands the signal to, so the handlers are swapped for ones that only
    note the signal (a per-thread mask would let another thread of the process take it: a reward worker's, a
    tool's). Outside the main thread, where handlers cannot be swapped, the signal is blocked for this thread."""
    import signal
    import threading

    held = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in held}
    for s in held:
        if previous[s] is not None:  # None: a handler not installed from Python, left alone
            signal.signal(s, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
        for signum in received:
            signal.raise_signal(signum)  # now to the handler that was there


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def follow_umask(directory: Path, patterns: tuple[str, ...] = ("*",)) -> None:
    """Give the files under `directory` (those matching `patterns`) the mode the umask gives every other file:
    safetensors and torch.save write theirs private (0600), so a run's weights were unreadable to the group that
    could read its recipe and metrics."""
    umask = os.umask(0)
    os.umask(umask)
    for pattern in patterns:
        for path in Path(directory).rglob(pattern):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o666 & ~umask)


def rename_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """A trainer's log dict in metrics.jsonl's names (see METRIC_NAMES)."""
    row = {}
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        row[metric_name(key)] = value
    return row


def metric_name(key: str) -> str:
    """A trainer's name for a logged number -> metrics.jsonl's (the trackers of report_to get the same)."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    if key.startswith("rewards/") and key.endswith("/mean"):
        return key.removesuffix("/mean")  # rewards/<name>
    return key


class MetricsLog:
    """metrics.jsonl: appended and flushed line by line, so `report` can read a run in progress."""

    def __init__(self, path: Path, *, resume_from_step: int | None = None):
        self.path = path
        if resume_from_step is not None and path.exists():
            # Steps after the checkpoint will be trained, and logged, again.
            kept = [line for line in path.read_text().splitlines() if _step(line) <= resume_from_step]
            atomic_write(path, "".join(line + "\n" for line in kept))
        self._file = path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf  # an unreadable line goes


MARKER_FILE = "run.json"
RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TRAINER_STATE_FILE = "trainer_state.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
EVAL_REPORT_FILE = Path("eval") / "eval.json"
EXPORT_MARKER_FILE = "grpo-cli-export.json"


def read_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The run's saved recipe.yaml as a mapping (the resolved recipe, absolute paths), None when it has none."""
    import yaml

    return _read_mapping(Path(run_dir) / RECIPE_FILE, yaml.safe_load, "YAML")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, None while the run is in progress (it is written at the end)."""
    return _read_mapping(Path(run_dir) / SUMMARY_FILE, json.loads, "JSON")


def read_trainer_state(checkpoint: Path) -> dict[str, Any] | None:
    """A checkpoint's trainer_state.json (transformers' TrainerState: global_step, max_steps, ...), None without."""
    return _read_mapping(Path(checkpoint) / TRAINER_STATE_FILE, json.loads, "JSON")


def read_adapter_config(directory: Path) -> dict[str, Any] | None:
    """A peft adapter's adapter_config.json (base_model_name_or_path, ...), None when the directory holds none."""
    return _read_mapping(Path(directory) / ADAPTER_CONFIG_FILE, json.loads, "JSON")


def read_eval_report(run_dir: Path) -> dict[str, Any] | None:
    """RUN/eval/eval.json, what the latest `eval RUN` measured, None before any."""
    return _read_mapping(Path(run_dir) / EVAL_REPORT_FILE, json.loads, "JSON")


def read_export_marker(directory: Path) -> dict[str, Any] | None:
    """An export's grpo-cli-export.json (the run it came from, its recipe), None when it is no export."""
    return _read_mapping(Path(directory) / EXPORT_MARKER_FILE, json.loads, "JSON")


def run_algorithm(run_dir: Path) -> str | None:
    """The algorithm that trained the run in `run_dir`: its marker's, else (a run from before the marker) its
    recipe.yaml's, `grpo` when that names none; None when the directory holds neither or they name no algorithm."""
    run_dir = Path(run_dir)
    saved = _read_mapping(run_dir / MARKER_FILE, json.loads, "JSON")
    if saved is None:
        saved = read_recipe(run_dir)
        if saved is None:
            return None
        saved = {"algorithm": "grpo", **saved}  # the recipe's default
    algorithm = saved.get("algorithm")
    return algorithm if isinstance(algorithm, str) else None


CARD_FILE = "README.md"  # the run's model card
CARD_HASH = "card_sha256"  # in the marker: the card as the run last wrote it (None: it wrote none)


def read_marker(run_dir: Path) -> dict[str, Any] | None:
    """The run's marker, run.json (format, algorithm, run id, the card's hash, the manifest of what produced the
    run), None when it has none."""
    return _read_mapping(Path(run_dir) / MARKER_FILE, json.loads, "JSON")


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def card_is_ours(run_dir: Path) -> bool:
    """Whether RUN/README.md is absent or holds what the run wrote there, not a user's edit of it: only then may the
    run replace it, or --overwrite delete it."""
    card = Path(run_dir) / CARD_FILE
    if not card.exists():
        return True
    try:
        marker = read_marker(run_dir)
    except UserError:
        return False
    # No marker (a run from before it), or one from before the hash: nothing says the card is not the run's.
    return marker is None or CARD_HASH not in marker or marker[CARD_HASH] == _sha256(card)


def record_card(run_dir: Path) -> None:
    """The run has just written its card: keep its hash in the marker (see `card_is_ours`)."""
    marker = read_marker(run_dir)
    if marker is not None:
        atomic_write(
            Path(run_dir) / MARKER_FILE,
            json.dumps({**marker, CARD_HASH: _sha256(Path(run_dir) / CARD_FILE)}, indent=2) + "\n",
        )


def run_kind(run_dir: Path) -> RunKind | None:
    """What the run in `run_dir` made (a policy, a reward model), None when it holds none of a known algorithm."""
    algorithm = ALGORITHMS.get(run_algorithm(run_dir))
    return algorithm.makes if algorithm else None


def _read_mapping(path: Path, parse: Callable[[str], Any], kind: str) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    except (ValueError, yaml.YAMLError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} is damaged: it is not valid {kind} ({first_line}); repair or delete it"
        ) from e
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged: it should hold a mapping of keys to values; repair or delete it")
    return data


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged steps of a run, one dict per step in step order; no rows when it has no metrics.jsonl.

    The last line is skipped if it does not parse: a run appends to the log while it trains, so it may be cut
    short. A resumed run logs again the steps after its last checkpoint; the later line of a step wins, key by key:
    several lines of one step (the training metrics and a held-out evaluation's `eval/` ones) make one row.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        # A cut-off last line may end inside a multi-byte character: replace it rather than fail.
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e

    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    by_step: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            if i == last:
                break
            raise UserError(
                f"{path}, line {i + 1}, is not a JSON object with an integer 'step': delete or repair that line"
            )
        by_step[step] = {**by_step.get(step, {}), **row}
    return [by_step[step] for step in sorted(by_step)]


def finish_run(
    trainer, output_dir: Path, *, algorithm: str, wall_time_s: float, resume_from: Path | None, extra: dict
) -> dict:
    """The end every algorithm shares: save the trained model (or adapter), then, on the main process only,
    summary.json ({} on the others)."""
    main = trainer.accelerator.is_main_process
    card = Path(output_dir) / CARD_FILE
    edited = card.read_bytes() if main and not card_is_ours(output_dir) else None
    trainer.save_model(str(output_dir))  # peft and TRL write a README.md of their own beside the weights
    if not main:
        return {}
    if edited is not None:
        atomic_write(card, lambda f: f.write(edited))  # the user's card stays as they left it
    else:
        record_card(output_dir)
    follow_umask(output_dir, WEIGHT_FILES)
    return write_summary(
        output_dir,
        algorithm=algorithm,
        wall_time_s=wall_time_s,
        extra={**extra, "resumed_from": resume_from.name if resume_from else None},
    )


def write_summary(output_dir: Path, *, algorithm: str, wall_time_s: float, extra: dict | None = None) -> dict:
    """summary.json, from metrics.jsonl: its keys are the same whatever the run's length."""
    rows = read_metrics(output_dir)
    rewards = [r["reward"] for r in rows if r.get("reward") is not None]
    window = max(1, min(10, len(rewards) // 5))  # first/last mean over a few steps: single steps are noisy
    summary = {
        "algorithm": algorithm,
        "steps": max((r.get("step", 0) for r in rows), default=0),
        "wall_time_s": round(wall_time_s, 2),
        "first_reward": rewards[0] if rewards else None,
        "last_reward": rewards[-1] if rewards else None,
        "first_mean_reward": sum(rewards[:window]) / window if rewards else None,
        "last_mean_reward": sum(rewards[-window:]) / window if rewards else None,
        "mean_reward_window": window if rewards else None,  # the steps each of the two means is over
        "reward_errors": {},  # RL runs: {reward: {completions, errors, first_error}} (callbacks.RunLogger)
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    atomic_write(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary
