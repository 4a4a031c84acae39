"""Where a run continues from: ``resume=null | auto | <path.ckpt>`` -> a checkpoint and its global step.

``auto`` takes the run's newest checkpoint that loads, by global step, not only ``last.ckpt``: a job
killed while writing its first ``last.ckpt`` still has its step checkpoints. Before that, the partial
files killed writers left next to the checkpoints (up to tens of MB each) are deleted.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from vla.atomic import stale_temporaries
from vla.models.checkpoints import TRAINING_CHECKPOINT_KEY
from vla.training.config_checks import RULES, ConfigError

LAST = "last.ckpt"


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    step: int  # the checkpoint's global step: the run continues after it


def remove_stale_temporaries(directories: Iterable[Path]) -> list[Path]:
    """Delete the temporary files that killed writers left in ``directories``; returns (and prints) them."""
    removed = []
    for path in (path for directory in directories for path in stale_temporaries(directory)):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # another process cleaned it up first
            continue
        print(f"Removed {path} ({size / 1e6:.1f} MB), a partial file left by a killed writer")
        removed.append(path)
    return removed


def checkpoint_step(path: Path) -> int:
    """The global step of the train.py checkpoint ``path``; a ``ValueError`` saying why it is not one otherwise."""
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; a partial write lacks the zip directory
        raise ValueError("is not a complete PyTorch checkpoint (no zip archive: truncated, or another kind of file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: tensors stay on disk
    except Exception as error:  # a damaged archive or unsafe pickle: either way it cannot be resumed from
        raise ValueError(f"cannot be loaded ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    if not isinstance(state, dict) or TRAINING_CHECKPOINT_KEY not in state or "global_step" not in state:
        raise ValueError(f"was not written by train.py (no {TRAINING_CHECKPOINT_KEY!r} and 'global_step' entries)")
    return int(state["global_step"])


def newest_checkpoint(checkpoint_dir: Path) -> ResumePoint | None:
    """The loadable checkpoint with the highest global step (``last.ckpt`` on a tie); reports those skipped."""
    points = []
    for path in sorted(checkpoint_dir.glob("*.ckpt")):
        if path.name.startswith("."):  # a temporary sibling, still being written by a live process
            continue
        try:
            points.append(ResumePoint(path, checkpoint_step(path)))
        except ValueError as error:
            print(f"resume=auto: skipping {path}: it {error}")
    if not points:
        return None
    return max(points, key=lambda point: (point.step, point.path.name == LAST))


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> ResumePoint | None:
    """The checkpoint to continue from, or None to start fresh; :class:`ConfigError` for a bad ``resume=``."""
    if resume in (None, "", "null"):
        return None
    if resume == "auto":
        point = newest_checkpoint(checkpoint_dir)
        print(f"Resuming from {point.path} (step {point.step})" if point else
              f"resume=auto: no loadable checkpoint in {checkpoint_dir} yet, starting fresh")
        return point
    path = Path(resume)
    if path.suffix != ".ckpt" or not path.is_file():
        problem = "no such file" if not path.exists() else "not a .ckpt file"
        raise ConfigError(f"resume={resume!r}: {problem}; expected {RULES['resume'].allowed}")
    try:
        return ResumePoint(path, checkpoint_step(path))
    except ValueError as error:
        raise ConfigError(f"resume={resume!r}: the file {error}; expected {RULES['resume'].allowed}") from error
