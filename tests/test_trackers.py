"""report_to: each tracker, offline, logs what metrics.jsonl has under the same names, read back with its own
reader. A tracker that is not installed is skipped here (`pip install "grpo-cli[trackers]"`); validate refuses
a recipe naming one that is not (tests/test_validate_nonsense.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_RECIPE

pytestmark = pytest.mark.slow

STEPS = 2


def installed(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


def train_with(tracker: str, tmp_path: Path, env: dict) -> Path:
    run = tmp_path / "tracked"
    recipe = {**TINY_RECIPE, "output_dir": str(run)}
    recipe["trainer"] = {**TINY_RECIPE["trainer"], "max_steps": STEPS, "report_to": [tracker]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def logged(run: Path) -> dict[str, list[float]]:
    """metrics.jsonl's numbers by name, in step order."""
    series: dict[str, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        for key, value in json.loads(line).items():
            if key not in ("step", "time") and isinstance(value, int | float):
                series.setdefault(key, []).append(float(value))
    return series


@installed("tensorboard")
def test_tensorboard_event_files_hold_metrics_jsonl_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train_with("tensorboard", tmp_path, {})
    (events,) = [p.parent for p in (run / "runs").rglob("events.out.tfevents.*")]
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    expected = logged(run)
    assert {"reward", "rewards/accuracy", "rewards/closeness"} <= set(expected)
    for name in ("reward", "rewards/accuracy", "rewards/closeness"):
        values = [event.value for event in accumulator.Scalars(f"train/{name}")]
        assert values == pytest.approx(expected[name], rel=1e-6), name
    assert not any(tag.startswith("train/rewards/") and tag.endswith("/mean") for tag in scalars)


def wandb_records(path: Path):
    """The records of a W&B run file (run-*.wandb: LevelDB's log format, 32 KiB blocks of checksummed chunks after
    a 7-byte ':W&B' header), parsed as W&B's protobuf Records: what `wandb sync` would upload."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@installed("wandb")
def test_wandb_offline_run_holds_metrics_jsonl_names(tmp_path):
    run = train_with(
        "wandb", tmp_path, {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    )
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history, names = [], []
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            names.append(record.run.display_name)
        elif kind == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            if "train/reward" in items:
                history.append(items)
    expected = logged(run)
    assert names[0] == "tracked"  # the run directory's name
    for name in ("reward", "rewards/accuracy", "rewards/closeness"):
        assert [h[f"train/{name}"] for h in history] == pytest.approx(expected[name], rel=1e-6), name
    assert not any(key.endswith("/mean") and key.startswith("train/rewards/") for h in history for key in h)


@installed("trackio")
def test_trackio_local_store_holds_metrics_jsonl_names(tmp_path):
    store = tmp_path / "trackio"
    run = train_with("trackio", tmp_path, {"TRACKIO_DIR": str(store)})
    read = (
        "import json; from trackio.sqlite_storage import SQLiteStorage; "
        "print(json.dumps(SQLiteStorage.get_logs('huggingface', run='tracked'), default=str))"
    )
    done = subprocess.run(
        [sys.executable, "-c", read],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACKIO_DIR": str(store)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [row for row in json.loads(done.stdout.splitlines()[-1]) if "train/reward" in row]
    expected = logged(run)
    for name in ("reward", "rewards/accuracy", "rewards/closeness"):
        assert [row[f"train/{name}"] for row in rows] == pytest.approx(expected[name], rel=1e-6), name
