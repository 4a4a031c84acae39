"""Dataset statistics in OpenVLA's ``dataset_statistics.json`` layout.

Computed as OpenVLA does (``get_dataset_statistics``): over the float32 actions / proprio of all
splits after standardization, NumPy mean and population std (ddof 0) and linear-interpolated
q01/q99, plus ``num_transitions`` / ``num_trajectories``. The action entry carries the dataset's
normalization mask; proprio's mask is all True (OpenVLA's default when none is given).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla.atomic import write_bytes_atomic

STATISTICS_FILE = "dataset_statistics.json"


def _summary(values: np.ndarray, mask: Sequence[bool]) -> dict[str, list]:
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
        "mask": [bool(m) for m in mask],
    }


def compute_statistics(
    actions: Sequence[np.ndarray],
    proprios: Sequence[np.ndarray] | None,
    action_mask: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Statistics for one dataset from per-episode ``[T, A]`` actions and ``[T, P]`` proprio.

    Episodes without proprio (``proprios`` None, or ``P == 0``) get zeros like the actions, as in OpenVLA.
    """
    if not actions:
        raise ValueError("cannot compute statistics of a dataset without episodes")
    action = np.concatenate([np.asarray(a, dtype=np.float32) for a in actions])
    if action.ndim != 2 or len(action) == 0:
        raise ValueError(f"actions must be non-empty [T, A] arrays, got concatenated shape {action.shape}")
    proprio = None if proprios is None else np.concatenate([np.asarray(p, dtype=np.float32) for p in proprios])
    if proprio is None or proprio.shape[-1] == 0:
        proprio = np.zeros_like(action)
    if len(proprio) != len(action):
        raise ValueError(f"{len(proprio)} proprio rows for {len(action)} actions")
    mask = [True] * action.shape[1] if action_mask is None else list(action_mask)
    if len(mask) != action.shape[1]:
        raise ValueError(f"action mask has {len(mask)} entries for {action.shape[1]} action dimensions")
    return {
        "action": _summary(action, mask),
        "proprio": _summary(proprio, [True] * proprio.shape[1]),
        "num_transitions": int(len(action)),
        "num_trajectories": len(actions),
    }


def statistics_bytes(statistics: dict[str, Any]) -> bytes:
    """The canonical file bytes (the manifest pins their sha256)."""
    return json.dumps(statistics, indent=2).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_statistics(directory: Path, dataset: str, statistics: dict[str, Any]) -> str:
    """Atomically write ``{dataset: statistics}`` to ``dataset_statistics.json``; return its sha256."""
    data = statistics_bytes({dataset: statistics})
    write_bytes_atomic(Path(directory) / STATISTICS_FILE, data)
    return sha256_hex(data)


def load_statistics(directory: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read ``dataset_statistics.json`` (all datasets), checking its hash when one is given."""
    path = Path(directory) / STATISTICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"missing statistics file {path} (run data_prep for this dataset first)")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise ValueError(f"{path} does not match the sha256 recorded in the manifest (file changed or corrupt)")
    return json.loads(data)
