"""Files that are complete or absent: write to a temporary sibling, then rename over the target.

A job killed mid-write leaves at worst a ``.<stem>.tmp<pid><suffix>`` file behind, never a truncated target;
every writer in the project (shards, statistics, manifests, checkpoints, exports) goes through here.
:func:`stale_temporaries` finds the leftovers of dead writers, so a restarted job can delete them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ``.<stem>.tmp<pid><suffix>``: the names temporary_sibling gives; group 1 is the writer's process id.
TEMPORARY_NAME = re.compile(r"\..+\.tmp(\d+)(\.[^.]+)?")


def temporary_sibling(target: Path) -> Path:
    """Where ``target`` is written before the rename (hidden, per process, same directory, same extension)."""
    return target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")  # keeps the extension


def atomic_write(target: str | os.PathLike, write: Callable[[Path], Any], fsync: bool = False) -> Path:
    """Call ``write(tmp_path)``, optionally fsync the result, then rename it to ``target``."""
    target = Path(target)
    tmp = temporary_sibling(target)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Temporary siblings in ``directory`` left by writers that died (killed mid-write): safe to delete.

    A file whose writer is still running (this process included) is never listed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.is_file() and _written_by_dead_process(path.name))


def _written_by_dead_process(name: str) -> bool:
    match = TEMPORARY_NAME.fullmatch(name)
    return match is not None and not _process_alive(int(match.group(1)))


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this machine (a process of another user counts as running)."""
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(target: str | os.PathLike, payload: Any, **dumps_kwargs: Any) -> Path:
    """JSON written atomically (``dumps_kwargs`` go to ``json.dumps``; default indent 2)."""
    return write_bytes_atomic(target, json.dumps(payload, **{"indent": 2, **dumps_kwargs}).encode("utf-8"))
