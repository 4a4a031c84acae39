"""Build a VLA from plain config values (what ``conf/model/*.yaml`` instantiate)."""

from __future__ import annotations

from collections.abc import Mapping
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
) -> VLA:
    """A VLA from plain values: what configs instantiate (``_target_: vla.models.build_vla``)."""
    config = VLAConfig(
        vision_backbone=vision_backbone, llm_backbone=llm_backbone, projector=projector,
        image_resize_strategy=image_resize_strategy, n_action_bins=n_action_bins, model_id=model_id,
        attn_implementation=attn_implementation, pretrained_vision=pretrained_vision, pretrained_llm=pretrained_llm,
    )
    return VLA(config, norm_stats=norm_stats, tokenizer_path=tokenizer_path)
