"""Files that are complete or absent: write to a temporary sibling, then rename over the target.

A job killed mid-write leaves at worst a ``.<stem>.tmp<pid><suffix>`` file behind, never a truncated target;
every writer in the project (shards, statistics, manifests, checkpoints, exports) goes through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(target: str | os.PathLike, payload: Any, **dumps_kwargs: Any) -> Path:
    """JSON written atomically (``dumps_kwargs`` go to ``json.dumps``; default indent 2)."""
    return write_bytes_atomic(target, json.dumps(payload, **{"indent": 2, **dumps_kwargs}).encode("utf-8"))
