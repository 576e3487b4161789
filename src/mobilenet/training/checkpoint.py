"""Run folders: resumable training state plus ready-to-use weights, every file written atomically.

A run folder holds:
- ``state.pt``: everything needed to resume (model, optimizer, schedule, EMA, epoch, history), tensors and
  plain Python values only, so it loads with ``torch.load(weights_only=True)``: nothing is unpickled;
- ``last.safetensors`` / ``best.safetensors``: the weights to use (the EMA weights when EMA is on) in
  mobilenet's weights format, with class names and preprocessing;
- ``metrics.csv`` / ``metrics.jsonl``: one row per epoch, rewritten from the history so a resumed run never
  duplicates a row.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from mobilenet.errors import MobilenetError
from mobilenet.fileio import atomic_path, atomic_write_text

STATE_FILE = "state.pt"
LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    with atomic_path(run_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the same thing to the user
        reason = type(exc).__name__
        raise MobilenetError(f"cannot resume: {path} is unreadable ({reason}); delete it to restart") from None


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())
