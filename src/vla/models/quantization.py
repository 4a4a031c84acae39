"""bitsandbytes quantization of the LLM's decoder-layer linears, shared by QLoRA training and serving.

Embeddings, norms and the output head stay float, as ``load_in_4bit`` / ``load_in_8bit`` do. The
swap happens after full-precision weights are loaded, so it works for any checkpoint, on CPU
(bitsandbytes >= 0.45) or CUDA.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.models.factory import float_dtype
from vla.models.vla import VLA

QUANT_TYPES = ("nf4", "fp4")  # 4-bit weight formats
QUANTIZE_MODES = ("8bit", "4bit")  # what a served model may be quantized to


def quantize_llm_4bit(vla: VLA, quant_type: str = "nf4", compute_dtype: torch.dtype | str = torch.float32) -> int:
    """Replace every ``nn.Linear`` in the LLM's decoder layers by a ``bnb.nn.Linear4bit`` holding
    the same (quantized) weights; returns how many layers were replaced.

    No double quantization of the scales, as OpenVLA's ``BitsAndBytesConfig`` (its default).
    """
    import bitsandbytes as bnb

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"Unknown 4-bit quant_type {quant_type!r}; choose one of {QUANT_TYPES}")
    compute_dtype = float_dtype(compute_dtype, "compute_dtype")
    if any(".lora_" in name for name, _ in vla.named_parameters()):
        raise ValueError("Quantize before injecting LoRA adapters (apply_qlora does both in order)")
    layers = vla.llm_backbone.llm.model.layers
    linears = [(name, m) for name, m in layers.named_modules() if type(m) is nn.Linear]
    for name, linear in linears:
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=False, quant_type=quant_type,
                                      device="meta")
        # Without this, bnb repacks the weight in place on its first CPU eval forward (bf16 scales, another
        # layout): eval outputs would then differ from training ones and merging could not dequantize exactly.
        quantized.support_avx512bf16_for_cpu = False
        quantized.weight = bnb.nn.Params4bit(linear.weight.data.to(compute_dtype), requires_grad=False,
                                             compress_statistics=False, quant_type=quant_type)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        replace_module(layers, name, quantized.to(linear.weight.device))  # .to() quantizes the weight
    return len(linears)


def quantize_llm(vla: VLA, mode: str, compute_dtype: torch.dtype = torch.float32) -> int:
    """Quantize the LLM's decoder-layer linears in place for serving; returns how many were replaced.

    4-bit is the QLoRA quantizer (NF4); 8-bit is ``Linear8bitLt`` (LLM.int8()).
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantization mode {mode!r}; choose one of {QUANTIZE_MODES}")
    if mode == "4bit":
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
        replace_module(layers, name, quantized.to(linear.weight.device))  # .to() quantizes
    return len(linears)


def is_4bit(module: nn.Module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, bnb.nn.Linear4bit)


def has_4bit_layers(model: nn.Module) -> bool:
    return any(is_4bit(m) for m in model.modules())


def dequantized_weight(linear: nn.Module) -> torch.Tensor:
    """A float copy of a linear layer's weight, dequantizing 4-bit weights."""
    if is_4bit(linear):
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(linear.weight.data, linear.weight.quant_state)
    return linear.weight.data.clone()


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
