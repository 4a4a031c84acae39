"""Parameter counts of a model config without weights or tokenizers (modules built on ``meta``)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vla.models.llm import get_llm_spec
from vla.models.projectors import build_projector
from vla.models.vision import _create_vit, get_vision_spec


def parameter_counts(vision_backbone: str, llm_backbone: str, projector: str = "fused-gelu-mlp", **_: object) -> dict[str, int]:
    """{"vision", "projector", "llm", "total"} parameter counts for a ``build_vla`` config."""
    vision_spec, llm_spec = get_vision_spec(vision_backbone), get_llm_spec(llm_backbone)
    with torch.device("meta"):
        vits = [_create_vit(timm_id, False, vision_spec) for timm_id in vision_spec.timm_ids]
        arch = dict(llm_spec.architecture, vocab_size=llm_spec.padded_vocab_size())
        llm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch))
        proj = build_projector(projector, sum(v.embed_dim for v in vits), llm.config.hidden_size)
    counts = {
        "vision": sum(p.numel() for v in vits for p in v.parameters()),
        "projector": sum(p.numel() for p in proj.parameters()),
        "llm": sum(p.numel() for p in llm.parameters()),
    }
    counts["total"] = sum(counts.values())
    return counts
