"""Per-episode records: appended and flushed one JSON line at a time, so a killed eval resumes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vla.atomic import write_json_atomic

EPISODES_FILE = "episodes.jsonl"
RUN_FILE = "run.json"


@dataclass(frozen=True)
class EpisodeRecord:
    """One rollout. ``error`` holds the env's exception text when the episode crashed (a failure)."""

    task_id: int
    task_name: str
    trial: int
    success: bool
    steps: int
    mean_latency_s: float | None
    error: str | None = None
    video: str | None = None


class EpisodeLog:
    """``<out>/episodes.jsonl`` plus ``run.json``, the settings the records were produced under."""

    def __init__(self, out_dir: str | os.PathLike, run_settings: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / EPISODES_FILE
        self._check_same_run(run_settings)
        self.records = self._load()

    def _check_same_run(self, settings: dict[str, Any]) -> None:
        run_file = self.out_dir / RUN_FILE
        settings = json.loads(json.dumps(settings))  # normalize tuples etc. to their JSON form
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if previous != settings:
                changed = sorted(k for k in previous.keys() | settings.keys() if previous.get(k) != settings.get(k))
                raise ValueError(f"{self.out_dir} holds an eval run with different settings ({changed}); "
                                 "use a fresh output directory or the original settings to resume it")
        else:
            write_json_atomic(run_file, settings)

    def _load(self) -> list[EpisodeRecord]:
        """Read finished episodes; drop a half-written last line left by a kill."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            self.path.write_bytes(complete)
        return [EpisodeRecord(**json.loads(line)) for line in complete.decode().splitlines() if line.strip()]

    def done(self) -> set[tuple[int, int]]:
        return {(r.task_id, r.trial) for r in self.records}

    def append(self, record: EpisodeRecord) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
