"""Success rates with Wilson 95% intervals, per task and per suite."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from vla.eval.records import EpisodeRecord

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class SuccessRate:
    name: str
    successes: int
    episodes: int
    ci_low: float
    ci_high: float
    task_id: int | None = None  # None for the suite row
    errors: int = 0
    mean_steps: float = 0.0
    mean_latency_s: float | None = None

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval: sane at 0/n and n/n, unlike the normal approximation."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"Need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def success_rate(name: str, records: Iterable[EpisodeRecord], task_id: int | None = None) -> SuccessRate:
    records = list(records)
    successes = sum(r.success for r in records)
    latencies = [r.mean_latency_s for r in records if r.mean_latency_s is not None]
    low, high = wilson_interval(successes, len(records))
    return SuccessRate(
        name=name, successes=successes, episodes=len(records), ci_low=low, ci_high=high, task_id=task_id,
        errors=sum(r.error is not None for r in records),
        mean_steps=sum(r.steps for r in records) / len(records) if records else 0.0,
        mean_latency_s=sum(latencies) / len(latencies) if latencies else None,
    )


def summarize(suite_name: str, records: Iterable[EpisodeRecord]) -> tuple[list[SuccessRate], SuccessRate]:
    """Per-task rates (ordered by task id) and the suite rate over all episodes."""
    records = list(records)
    by_task: dict[int, list[EpisodeRecord]] = {}
    for record in records:
        by_task.setdefault(record.task_id, []).append(record)
    tasks = [success_rate(group[0].task_name, group, task_id) for task_id, group in sorted(by_task.items())]
    return tasks, success_rate(suite_name, records)
