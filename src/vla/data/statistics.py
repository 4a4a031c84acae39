"""Dataset statistics in OpenVLA's ``dataset_statistics.json`` layout.

Computed as OpenVLA does (``get_dataset_statistics``): over the float32 actions / proprio of all
splits after standardization, plus ``num_transitions`` / ``num_trajectories``. The action entry
carries the dataset's normalization mask; proprio's mask is all True (OpenVLA's default when none is
given). Each value is what OpenVLA's code gives under NumPy 1.x (its environment: TensorFlow 2.15
pins ``numpy<2``), whatever NumPy runs here:

- ``mean`` / ``std``: ``values.mean(0)`` / ``values.std(0)`` (population, ddof 0) on the float32
  array, accumulated in float32, exactly OpenVLA's calls. NumPy 1.26 and 2.x give the same bits.
- ``min`` / ``max``: exact in any precision.
- ``q01`` / ``q99``: :func:`openvla_quantile`, NumPy 1.x's linear-interpolated ``np.quantile`` on
  float32 input, which returns float64. NumPy 2 keeps float32 through the interpolation (up to
  ~1e-8 off on Bridge), so ``np.quantile`` is not called on float32 here.

The kind of normalization (``bounds_q99`` / ``bounds`` / ``normal``) is not part of this file: the
manifest records it, and :attr:`vla.data.VLADataModule.dataset_statistics` adds it to the
statistics a model carries (see :func:`vla.contract.normalization.with_normalization_kind`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla.atomic import write_bytes_atomic
from vla.data.locations import UrlPath, as_location

STATISTICS_FILE = "dataset_statistics.json"


def openvla_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """``np.quantile(values, q, axis=0)`` (linear) as NumPy 1.x computes it for float32 ``values [N, D]``.

    NumPy 1.x: virtual index ``(N - 1) * q`` in float64, neighbours ``a <= b`` of the sorted column,
    their difference ``b - a`` in float32 (the input dtype), then the interpolation in float64:
    ``a + (b - a) * g``, or ``b - (b - a) * (1 - g)`` where ``g >= 0.5``. The result is float64.
    It equals ``np.quantile(values.astype(np.float64), q, axis=0)`` whenever ``b - a`` is exact
    in float32 (neighbours within a factor 2 of each other: nearly always on real data), and
    differs from NumPy 2's float32 ``np.quantile`` in most dimensions. A column holding NaN gives NaN.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"quantiles need a non-empty [N, D] array, got shape {values.shape}")
    n = len(values)
    index = np.float64(n - 1) * np.float64(q)
    lo = n - 1 if index >= n - 1 else max(int(np.floor(index)), 0)
    hi = min(lo + 1, n - 1)
    gamma = index - np.float64(lo) if index < n - 1 else np.float64(0.0)
    ordered = np.partition(values, sorted({lo, hi}), axis=0)
    a, b = ordered[lo], ordered[hi]
    diff = b - a  # float32, as NumPy 1.x's _lerp subtracts the float32 neighbours
    weight = np.full(1, gamma, dtype=np.float64)  # a float64 array: the products below are float64
    result = a + diff * weight
    if gamma >= 0.5:
        result = b - diff * (1 - weight)
    return np.where(np.isnan(values).any(0), np.nan, result)


def _summary(values: np.ndarray, mask: Sequence[bool]) -> dict[str, list]:
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": openvla_quantile(values, 0.01).tolist(),
        "q99": openvla_quantile(values, 0.99).tolist(),
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


def load_statistics(directory: str | Path | UrlPath, expected_sha256: str | None = None) -> dict[str, Any]:
    """Read ``dataset_statistics.json`` (all datasets; ``directory`` may be an fsspec URL), checking its hash when one is given."""
    path = as_location(directory) / STATISTICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"missing statistics file {path} (run data_prep for this dataset first)")
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256:
        raise ValueError(f"{path} does not match the sha256 recorded in the manifest (file changed or corrupt)")
    return json.loads(data)
