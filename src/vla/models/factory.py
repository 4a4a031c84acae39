"""Build a VLA from plain config values (what ``conf/model/*.yaml`` instantiate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vla.models.config import VLAConfig
from vla.models.vla import VLA

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def float_dtype(dtype: torch.dtype | str, what: str = "dtype") -> torch.dtype:
    """A weight/compute dtype from config: a floating ``torch.dtype`` or one of ``FLOAT_DTYPES``' names."""
    resolved = FLOAT_DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"Unknown {what} {dtype!r}; choose one of {sorted(FLOAT_DTYPES)}")
    return resolved


def build_vla(
    vision_backbone: str,
    llm_backbone: str,
    projector: str = "fused-gelu-mlp",
    image_resize_strategy: str = "resize-naive",
    pretrained_vision: bool = False,
    pretrained_llm: bool = False,
    n_action_bins: int = 256,
    model_id: str | None = None,
    norm_stats: Mapping[str, Any] | None = None,
    tokenizer_path: str | None = None,
    attn_implementation: str = "sdpa",
    action_head: str = "tokens",
    chunk_size: int = 1,
    action_dim: int | None = None,
    image_views: Sequence[str] = ("primary",),
    use_proprio: bool = False,
    film: bool = False,
) -> VLA:
    """A VLA from plain values: what configs instantiate (``_target_: vla.models.build_vla``).

    The chunk fields are :class:`VLAConfig`'s (docs/action-chunks.md), sized from ``norm_stats`` by
    :func:`chunk_fields`.
    """
    config = VLAConfig(
        vision_backbone=vision_backbone, llm_backbone=llm_backbone, projector=projector,
        image_resize_strategy=image_resize_strategy, n_action_bins=n_action_bins, model_id=model_id,
        attn_implementation=attn_implementation, pretrained_vision=pretrained_vision, pretrained_llm=pretrained_llm,
        **chunk_fields(norm_stats, action_head=action_head, chunk_size=chunk_size, action_dim=action_dim,
                       image_views=image_views, use_proprio=use_proprio, film=film),
    )
    return VLA(config, norm_stats=norm_stats, tokenizer_path=tokenizer_path)


def chunk_fields(norm_stats: Mapping[str, Any] | None, *, action_head: str = "tokens", chunk_size: int = 1,
                 action_dim: int | None = None, image_views: Sequence[str] = ("primary",), use_proprio: bool = False,
                 film: bool = False) -> dict[str, Any]:
    """:data:`vla.models.config.CHUNK_FIELDS` from build-time choices, shared by every path that builds chunk modules
    (:func:`build_vla`, ``load_openvla``) so they size them alike.

    For the ``l1`` head ``action_dim`` None means the datasets' action size; ``use_proprio`` sizes the proprio
    token from the datasets' ``proprio`` statistics. Both come from ``norm_stats`` and every dataset must agree.
    """
    if action_head == "l1" and action_dim is None:
        action_dim = _size_from_stats(norm_stats, "action", "action_dim")
    if not isinstance(use_proprio, bool):
        raise ValueError(f"use_proprio must be true or false, got {use_proprio!r}")
    proprio_dim = _size_from_stats(norm_stats, "proprio", "proprio_dim") if use_proprio else 0
    return {"action_head": action_head, "chunk_size": chunk_size, "action_dim": action_dim,
            "image_views": image_views, "proprio_dim": proprio_dim, "film": film}


def _size_from_stats(norm_stats: Mapping[str, Any] | None, key: str, field: str) -> int:
    """The length of every dataset's ``norm_stats[name][key]["q01"]``; they must all agree."""
    if not norm_stats:
        raise ValueError(f"{field} comes from the datasets' {key!r} statistics, but no norm_stats were given; "
                         f"pass norm_stats{' or action_dim' if key == 'action' else ''}")
    sizes = {}
    for name, stats in norm_stats.items():
        q01 = (stats.get(key) or {}).get("q01") if isinstance(stats, Mapping) else None
        if q01 is None:
            raise ValueError(f"Dataset {name!r} has no {key!r} statistics (q01) in norm_stats, needed for {field}")
        sizes[name] = len(q01)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Datasets disagree on their {key} size ({field}): {dict(sorted(sizes.items()))}")
    return next(iter(sizes.values()))
