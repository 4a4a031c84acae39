"""Data pipeline: normalization, prompts, mixtures and the streaming DataModule.

``VLADataModule`` is imported lazily so that light users (e.g. serving) do not pull in Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VLADataModule"]


def __getattr__(name: str) -> Any:
    if name == "VLADataModule":
        from vla.data.datamodule import VLADataModule

        return VLADataModule
    raise AttributeError(f"module 'vla.data' has no attribute {name!r}")
