"""Load an exported VLA for serving: device, dtype and optional bitsandbytes 8-bit/4-bit LLM weights.

Quantization swaps the LLM's ``nn.Linear`` layers (not the output head, as bitsandbytes and HF do)
for ``Linear8bitLt`` / ``Linear4bit`` (NF4) after the full-precision weights are loaded, so it
works for any exported checkpoint, on CPU (bitsandbytes >= 0.45) or CUDA.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from vla.models import VLA, load_vla

QUANTIZE_MODES = ("8bit", "4bit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_policy(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                quantize: str | None = None) -> VLA:
    """An exported checkpoint ready for ``predict_action_batch`` (eval mode, no grads)."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be null or one of {QUANTIZE_MODES}, got {quantize!r}")
    vla = load_vla(checkpoint, device="cpu", dtype=parse_dtype(dtype))
    if quantize is not None:
        quantize_llm(vla, quantize, compute_dtype=parse_dtype(dtype))
    vla.to(device)  # bitsandbytes quantizes weights when they are moved
    return vla.eval().requires_grad_(False)


def quantize_llm(vla: VLA, mode: str, compute_dtype: torch.dtype = torch.float32) -> int:
    """Replace the LLM's linear layers in place; returns how many were replaced."""
    import bitsandbytes as bnb

    llm = vla.llm_backbone
    output_head = llm.llm.get_output_embeddings()
    targets = [(name, module) for name, module in llm.named_modules()
               if isinstance(module, nn.Linear) and module is not output_head]
    if not targets:
        raise ValueError("The LLM backbone has no nn.Linear layers to quantize")
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = llm.get_submodule(parent_name) if parent_name else llm
        setattr(parent, child, _quantized_copy(bnb, linear, mode, compute_dtype))
    return len(targets)


def _quantized_copy(bnb, linear: nn.Linear, mode: str, compute_dtype: torch.dtype) -> nn.Module:
    has_bias = linear.bias is not None
    weight = linear.weight.data.float()
    if mode == "8bit":
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, threshold=6.0)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                  compute_dtype=compute_dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
    return layer.to(linear.weight.device)
