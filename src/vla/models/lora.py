"""LoRA adapters on a VLA (Hugging Face ``peft``): injecting them, and merging them into plain weights.

Adapters are injected in place (no wrapper module), so the model keeps its attribute paths and its
forward works unchanged. :func:`merge_lora` folds adapters into float weights and restores
``nn.Linear`` modules, so the merged model saves under the same parameter names as a freshly
built one: loading a LoRA training checkpoint for eval or export needs this module, not training.
Which parameters *train* is a training matter (``vla.training.stages``).

"all-linear" means every linear layer of the LLM except its output head (peft's own rule) by
default; ``adapt_vision_and_projector=True`` also adapts the vision and projector linears (OpenVLA's
``finetune.py``). The modules OpenVLA-OFT adds (:meth:`VLA.chunk_modules`: action head, proprio projector,
FiLM ``scale``/``shift``) never get adapters: OFT creates them after wrapping the model with LoRA and trains
them in full. 4-bit layers (QLoRA) get peft's bitsandbytes LoRA layer through peft's
custom-module mapping, so nothing on the model has to pretend it was loaded by transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from vla.models.quantization import dequantized_weight, has_4bit_layers, is_4bit, replace_module
from vla.models.vla import VLA

ADAPTER_NAME = "default"


def inject_lora(vla: VLA, r: int = 32, alpha: int | None = None, dropout: float = 0.0,
                target_modules: str | Sequence[str] = "all-linear", init_lora_weights: str | bool = "gaussian",
                adapt_vision_and_projector: bool = False) -> VLA:
    """Add LoRA adapters in place (``alpha`` defaults to OpenVLA's ``min(r, 16)``); returns ``vla``."""
    if r <= 0:
        raise ValueError(f"LoRA rank r must be positive, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if adapter_parameter_names(vla):
        raise ValueError("The model already has LoRA adapters; merge_lora it (or build a new one) first")
    scopes = ("vision_backbone.", "projector.", "llm_backbone.") if adapt_vision_and_projector else ("llm_backbone.",)
    targets = _target_names(vla, scopes, target_modules)
    config = LoraConfig(r=r, lora_alpha=min(r, 16) if alpha is None else alpha, lora_dropout=dropout,
                        target_modules=targets, init_lora_weights=init_lora_weights, bias="none")
    if has_4bit_layers(vla):
        import bitsandbytes as bnb
        from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

        config._register_custom_module({bnb.nn.Linear4bit: LoraLinear4bit})
    inject_adapter_in_model(config, vla, adapter_name=ADAPTER_NAME)
    return vla


def merge_lora(vla: VLA) -> VLA:
    """Fold adapters into float weights and restore plain ``nn.Linear`` modules, in place.

    4-bit layers (QLoRA) are dequantized first, so the merged model is all float and its state
    dict has exactly the keys of a freshly built model. All parameters require grad afterwards,
    as in a freshly built model. Returns ``vla``.
    """
    lora_layers = [(name, m) for name, m in vla.named_modules() if isinstance(m, LoraLayer)]
    if not lora_layers and not has_4bit_layers(vla):
        raise ValueError("merge_lora: the model has no LoRA adapters and no 4-bit layers to merge")
    with torch.no_grad():
        for name, layer in lora_layers:
            base = layer.get_base_layer()
            weight = dequantized_weight(base)
            for adapter in layer.active_adapters:
                weight += layer.get_delta_weight(adapter).to(weight.dtype)
            replace_module(vla, name, _plain_linear(weight, base.bias))
        for name, module in [(n, m) for n, m in vla.named_modules() if is_4bit(m)]:
            replace_module(vla, name, _plain_linear(dequantized_weight(module), module.bias))
    if hasattr(vla, "peft_config"):
        del vla.peft_config  # peft records its configs on the model it injected into
    vla.requires_grad_(True)
    return vla


def adapter_parameter_names(vla: nn.Module) -> set[str]:
    """Names of all LoRA adapter parameters in the model (empty when none were injected)."""
    return {name for name, _ in vla.named_parameters() if ".lora_" in name}


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.data.copy_(weight)
    if bias is not None:
        linear.bias.data.copy_(bias.data.to(weight.dtype))
    return linear


def _target_names(vla: VLA, scopes: tuple[str, ...], target_modules: str | Sequence[str]) -> list[str]:
    """Full module names to adapt: linear layers under ``scopes``, never the LLM's output head or a chunk module."""
    excluded = {id(vla.llm_backbone.llm.get_output_embeddings())}
    excluded.update(id(m) for module in vla.chunk_modules() for m in module.modules())
    linears = [name for name, m in vla.named_modules()
               if name.startswith(scopes) and (type(m) is nn.Linear or is_4bit(m)) and id(m) not in excluded]
    if isinstance(target_modules, str):
        if target_modules != "all-linear":
            raise ValueError(f"target_modules must be 'all-linear' or a list of layer names, got {target_modules!r}")
        return linears
    wanted = set(target_modules)
    chosen = [name for name in linears if name.rsplit(".", 1)[-1] in wanted]
    missing = wanted - {name.rsplit(".", 1)[-1] for name in chosen}
    if missing:
        raise ValueError(f"target_modules {sorted(missing)} match no linear layer; available: "
                         f"{sorted({name.rsplit('.', 1)[-1] for name in linears})}")
    return chosen


