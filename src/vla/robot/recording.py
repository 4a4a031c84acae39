"""Episode recordings (.npz of plain arrays + a JSON summary) and the latency report.

The .npz holds only numeric / bool arrays, so ``np.load(path)`` reads it with the default
``allow_pickle=False``; anything else (instruction, why the episode ended, statistics) goes to
the JSON summary next to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla.atomic import atomic_write, write_json_atomic

STAT_KEYS = ("mean", "p50", "p95", "max")


@dataclass
class EpisodeRecording:
    """Per-step arrays of one episode, filled by the loop as it goes."""

    instruction: str
    control_hz: float
    actions_per_query: int | None  # None: every action of each answer
    images: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    queried: list[bool] = field(default_factory=list)
    request_latency_s: list[float] = field(default_factory=list)  # NaN on steps served from a chunk
    work_s: list[float] = field(default_factory=list)  # observe + request + act, without the sleep
    start_s: list[float] = field(default_factory=list)  # step start, relative to the episode start
    ended_by: str = "running"

    @property
    def steps(self) -> int:
        return len(self.actions)

    def add_step(self, observation: dict[str, np.ndarray], action: np.ndarray, latency_s: float | None,
                 start_s: float, work_s: float) -> None:
        self.images.append(np.array(observation["image"], dtype=np.uint8))  # a copy: drivers reuse buffers
        if "state" in observation:
            self.states.append(np.array(observation["state"], dtype=np.float32))
        self.actions.append(np.asarray(action, dtype=np.float64))
        self.queried.append(latency_s is not None)
        self.request_latency_s.append(float("nan") if latency_s is None else latency_s)
        self.start_s.append(start_s)
        self.work_s.append(work_s)

    def periods_s(self) -> np.ndarray:
        """Achieved loop periods: time between consecutive step starts (sleep included)."""
        return np.diff(np.asarray(self.start_s, dtype=np.float64))

    def overruns(self) -> int:
        """Steps whose work alone took longer than the control period."""
        return int(np.sum(np.asarray(self.work_s) > 1.0 / self.control_hz))

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "images": _stack(self.images, np.uint8), "actions": _stack(self.actions, np.float64),
            "queried": np.asarray(self.queried, dtype=bool),
            "request_latency_s": np.asarray(self.request_latency_s, dtype=np.float64),
            "work_s": np.asarray(self.work_s, dtype=np.float64), "start_s": np.asarray(self.start_s, dtype=np.float64),
        }
        if self.states:
            arrays["states"] = _stack(self.states, np.float32)
        return arrays

    def summary(self) -> dict[str, Any]:
        periods = self.periods_s()
        return {
            "instruction": self.instruction, "steps": self.steps, "ended_by": self.ended_by,
            "control_hz": self.control_hz, "actions_per_query": self.actions_per_query,
            "queries": int(sum(self.queried)), "overruns": self.overruns(),
            "achieved_hz": float(1.0 / periods.mean()) if periods.size else None,
            "request_latency_s": latency_stats(self.request_latency_s), "loop_period_s": latency_stats(periods),
            "work_s": latency_stats(self.work_s),
        }


def _stack(items: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.stack(items).astype(dtype, copy=False) if items else np.zeros((0,), dtype=dtype)


def latency_stats(values: Any) -> dict[str, float | int | None]:
    """mean / p50 / p95 / max in seconds over the finite values (NaN marks steps without a request)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0, **dict.fromkeys(STAT_KEYS)}
    return {"n": int(values.size), "mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def write_recording(recording: EpisodeRecording, out_dir: str | os.PathLike, index: int) -> Path:
    """``episode_<index>.npz`` + ``episode_<index>.json`` (each complete or absent); returns the .npz path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"episode_{index:03d}.npz"
    atomic_write(npz, lambda tmp: np.savez_compressed(tmp, **recording.arrays()))  # tmp ends in .npz: kept as is
    write_json_atomic(npz.with_suffix(".json"), {**recording.summary(), "recording": npz.name})
    return npz


def format_report(recordings: list[EpisodeRecording]) -> str:
    """The end-of-run latency report over every step of every episode, in milliseconds."""
    latencies = [x for r in recordings for x in r.request_latency_s]
    periods = [x for r in recordings for x in r.periods_s()]
    works = [x for r in recordings for x in r.work_s]
    steps = sum(r.steps for r in recordings)
    hz = recordings[0].control_hz if recordings else float("nan")
    lines = [f"{len(recordings)} episode(s), {steps} steps, target {hz:g} Hz "
             f"({sum(r.overruns() for r in recordings)} overrun(s): work longer than 1/control_hz)"]
    for label, values in (("request latency", latencies), ("loop period", periods), ("step work", works)):
        stats = latency_stats(values)
        if stats["n"] == 0:
            lines.append(f"  {label:<16} -")
            continue
        lines.append(f"  {label:<16} " + "  ".join(f"{key} {stats[key] * 1e3:8.2f} ms" for key in STAT_KEYS)
                     + f"  (n={stats['n']})")
    period = latency_stats(periods)["mean"]
    lines.append(f"  achieved rate    {1.0 / period:.2f} Hz" if period else "  achieved rate    -")
    for index, r in enumerate(recordings):
        lines.append(f"  episode {index}: {r.steps} steps, ended by {r.ended_by}")
    return "\n".join(lines)
