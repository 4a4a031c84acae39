"""Action/proprio normalization with OpenVLA's exact arithmetic.

``stats`` is one entry of an OpenVLA ``dataset_statistics.json`` for one key, e.g.
``stats = json.load(f)["bridge_orig"]["action"]`` with lists ``mean, std, min, max, q01, q99`` and
an optional boolean ``mask``. Normalization runs in float32 (as OpenVLA's tf.data graph does);
un-normalization at inference runs in float64 without epsilon or clipping (as ``predict_action``).

The kind of normalization travels with the statistics: an entry may carry
``"normalization": "bounds_q99" | "bounds" | "normal"`` next to its lists (a key OpenVLA's code
never reads, so the file stays readable by OpenVLA). An entry without it (OpenVLA's released
checkpoints, older exports) means ``bounds_q99``, OpenVLA's BOUNDS_Q99. ``kind=None`` (the default
of :func:`normalize` / :func:`unnormalize`) uses the entry's kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NORMALIZATION_KINDS = ("bounds_q99", "bounds", "normal")
DEFAULT_NORMALIZATION = "bounds_q99"  # OpenVLA's BOUNDS_Q99; statistics without a kind mean this
NORMALIZATION_KEY = "normalization"  # the kind's key inside a statistics entry ("action" / "proprio")
_BOUND_KEYS = {"bounds_q99": ("q01", "q99"), "bounds": ("min", "max")}
_EPS = np.float32(1e-8)


def _check_kind(kind: str) -> str:
    kind = kind.lower()
    if kind not in NORMALIZATION_KINDS:
        raise ValueError(f"Unknown normalization kind {kind!r}; choose one of {NORMALIZATION_KINDS}")
    return kind


def normalization_kind(stats: Mapping[str, Any]) -> str:
    """The kind one statistics entry (e.g. ``norm_stats[key]["action"]``) was made for; none: ``bounds_q99``."""
    kind = stats.get(NORMALIZATION_KEY)
    return DEFAULT_NORMALIZATION if kind is None else _check_kind(str(kind))


def with_normalization_kind(dataset_stats: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A copy of one dataset's statistics (``{"action", "proprio", ...}``) whose ``action`` and
    ``proprio`` entries record ``kind``; an entry that already records another kind raises."""
    kind = _check_kind(kind)
    out = dict(dataset_stats)
    for part in ("action", "proprio"):
        if part not in out:
            continue
        entry = dict(out[part])
        if entry.get(NORMALIZATION_KEY) is not None and _check_kind(str(entry[NORMALIZATION_KEY])) != kind:
            raise ValueError(f"{part} statistics record normalization {entry[NORMALIZATION_KEY]!r}, not {kind!r}")
        entry[NORMALIZATION_KEY] = kind
        out[part] = entry
    return out


def _stat(stats: Mapping[str, Any], key: str, dtype: type, dim: int) -> np.ndarray:
    if key not in stats:
        raise KeyError(f"Statistics are missing {key!r} (have {sorted(stats)})")
    value = np.asarray(stats[key], dtype=dtype)
    if value.shape != (dim,):
        raise ValueError(f"Statistic {key!r} has shape {value.shape}, but the data has {dim} dimensions")
    return value


def _mask(stats: Mapping[str, Any], mask: Sequence[bool] | np.ndarray | None, dim: int) -> np.ndarray:
    chosen = mask if mask is not None else stats.get("mask")
    if chosen is None:
        return np.ones(dim, dtype=bool)
    chosen = np.asarray(chosen, dtype=bool)
    if chosen.shape != (dim,):
        raise ValueError(f"Normalization mask has shape {chosen.shape}, but the data has {dim} dimensions")
    return chosen


def normalize(
    x: np.ndarray,
    stats: Mapping[str, Any],
    mask: Sequence[bool] | np.ndarray | None = None,
    kind: str | None = None,
) -> np.ndarray:
    """Normalize ``x[..., D]`` to [-1, 1] (bounds kinds) or zero-mean/unit-std (``normal``).

    Where ``mask`` is False the value passes through. For the bounds kinds every dimension whose
    ``min == max`` is then set to 0 whatever the mask says (OpenVLA's unused-dimension rule).
    ``kind`` None: the statistics' own kind (:func:`normalization_kind`).
    """
    kind = normalization_kind(stats) if kind is None else _check_kind(kind)
    x = np.asarray(x, dtype=np.float32)
    dim = x.shape[-1]
    m = _mask(stats, mask, dim)
    if kind == "normal":
        mean, std = _stat(stats, "mean", np.float32, dim), _stat(stats, "std", np.float32, dim)
        return np.where(m, (x - mean) / (std + _EPS), x).astype(np.float32)
    lo_key, hi_key = _BOUND_KEYS[kind]
    low, high = _stat(stats, lo_key, np.float32, dim), _stat(stats, hi_key, np.float32, dim)
    scaled = np.clip(np.float32(2) * (x - low) / (high - low + _EPS) - np.float32(1), -1, 1)
    out = np.where(m, scaled, x)
    unused = _stat(stats, "min", np.float32, dim) == _stat(stats, "max", np.float32, dim)
    return np.where(unused, np.float32(0), out).astype(np.float32)


def unnormalize(
    a: np.ndarray,
    stats: Mapping[str, Any],
    mask: Sequence[bool] | np.ndarray | None = None,
    kind: str | None = None,
) -> np.ndarray:
    """Inverse used at inference (float64, no epsilon, no clip), where the mask is true.

    Bounds kinds: ``0.5 (a + 1) (high - low) + low`` (``q01``/``q99`` or ``min``/``max``);
    ``normal``: ``a * std + mean``. ``kind`` None: the statistics' own kind (:func:`normalization_kind`).
    """
    kind = normalization_kind(stats) if kind is None else _check_kind(kind)
    a = np.asarray(a, dtype=np.float64)
    dim = a.shape[-1]
    m = _mask(stats, mask, dim)
    if kind == "normal":
        mean, std = _stat(stats, "mean", np.float64, dim), _stat(stats, "std", np.float64, dim)
        return np.where(m, a * std + mean, a)
    lo_key, hi_key = _BOUND_KEYS[kind]
    low, high = _stat(stats, lo_key, np.float64, dim), _stat(stats, hi_key, np.float64, dim)
    return np.where(m, 0.5 * (a + 1) * (high - low) + low, a)
