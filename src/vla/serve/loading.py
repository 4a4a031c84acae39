"""Load a VLA for serving: device, dtype and optional bitsandbytes 8-bit/4-bit LLM weights.

Quantization swaps the linear layers of the LLM's decoder blocks (embeddings, norms and the output
head stay float, as ``load_in_8bit`` / ``load_in_4bit`` do) for ``Linear8bitLt`` / ``Linear4bit``
(NF4) after the full-precision weights are loaded, so it works for any exported checkpoint, on CPU
(bitsandbytes >= 0.45) or CUDA.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from vla.models import VLA, load_checkpoint
from vla.models.factory import float_dtype

QUANTIZE_MODES = ("8bit", "4bit")


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                quantize: str | None = None) -> VLA:
    """Any checkpoint form (``vla.models.load_checkpoint``) ready for ``predict_action_batch`` (eval mode, no grads)."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be null or one of {QUANTIZE_MODES}, got {quantize!r}")
    vla = load_checkpoint(checkpoint, device=device, dtype=float_dtype(dtype))
    if quantize is not None:
        quantize_llm(vla, quantize, compute_dtype=float_dtype(dtype))
    return vla.eval().requires_grad_(False)


def quantize_llm(vla: VLA, mode: str, compute_dtype: torch.dtype = torch.float32) -> int:
    """Quantize the LLM's decoder-layer linears in place; returns how many were replaced.

    4-bit reuses the QLoRA quantizer (NF4) from training; 8-bit uses ``Linear8bitLt`` (LLM.int8()).
    """
    if mode == "4bit":
        from vla.training.peft import quantize_llm_4bit

        return quantize_llm_4bit(vla, "nf4", compute_dtype)
    import bitsandbytes as bnb

    layers = vla.llm_backbone.llm.model.layers
    linears = [(name, module) for name, module in layers.named_modules() if type(module) is nn.Linear]
    for name, linear in linears:
        quantized = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                        has_fp16_weights=False, threshold=6.0)
        quantized.weight = bnb.nn.Int8Params(linear.weight.data.float(), requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        parent_name, _, child = name.rpartition(".")
        setattr(layers.get_submodule(parent_name), child, quantized.to(linear.weight.device))  # .to() quantizes
    return len(linears)
