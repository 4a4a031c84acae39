"""LoRA and QLoRA for a VLA (Hugging Face ``peft``), and merging adapters back into plain weights.

Hyper-parameters default to OpenVLA's ``vla-scripts/finetune.py``: ``r=32``,
``lora_alpha=min(r, 16)``, ``lora_dropout=0.0``, ``target_modules="all-linear"``,
``init_lora_weights="gaussian"``. OpenVLA puts adapters on every linear layer of the whole VLA;
here "all-linear" means every linear layer of the LLM except its output head (peft's own
"all-linear" rule) by default, and the projector trains in full (see :mod:`vla.training.stages`).
``adapt_vision_and_projector=True`` reproduces OpenVLA's choice (vision and projector linears get
adapters too, and their bases stay frozen).

Adapters are injected in place (no wrapper module), so the model keeps its attribute paths and
``VLA.forward`` / ``predict_action`` work unchanged. :func:`merge_lora` folds the adapters into
float weights and restores ``nn.Linear`` modules, so the merged model saves under the same
parameter names as a freshly built one.

QLoRA quantizes the LLM's decoder-layer linears to bitsandbytes NF4 (``Linear4bit``; embeddings,
norms and ``lm_head`` stay float, as ``load_in_4bit`` does) and then adds LoRA on top. bitsandbytes
runs these layers on the CPU too. OpenVLA's ``prepare_model_for_kbit_training`` also casts the
non-quantized weights to float32 and turns on gradient checkpointing; our models are built in
float32 already, and gradient checkpointing is a trainer setting, not done here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from vla.models.factory import float_dtype
from vla.models.vla import VLA
from vla.training.stages import apply_stage

ADAPTER_NAME = "default"
QUANT_TYPES = ("nf4", "fp4")


def apply_lora(
    vla: VLA,
    r: int = 32,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    init_lora_weights: str | bool = "gaussian",
    adapt_vision_and_projector: bool = False,
) -> VLA:
    """Inject LoRA adapters in place and apply the ``lora`` stage; returns ``vla``.

    ``alpha`` defaults to OpenVLA's ``min(r, 16)``. ``target_modules`` is ``"all-linear"`` or
    leaf names such as ``("q_proj", "v_proj")`` matched inside the adapted modules.
    """
    _inject(vla, r, alpha, dropout, target_modules, init_lora_weights, adapt_vision_and_projector)
    apply_stage(vla, "lora")
    return vla


def apply_qlora(
    vla: VLA,
    r: int = 32,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    init_lora_weights: str | bool = "gaussian",
    quant_type: str = "nf4",
    compute_dtype: torch.dtype | str = torch.float32,
) -> VLA:
    """Quantize the LLM's decoder-layer linears to 4 bit, inject LoRA on the LLM, apply ``qlora``.

    ``compute_dtype`` may be given by name (``"float32"``, ``"bfloat16"``) for Hydra configs.
    """
    quantize_llm_4bit(vla, quant_type, compute_dtype)
    # peft only wraps bnb layers with its 4-bit LoRA class when the model says it is loaded in 4 bit.
    vla.is_loaded_in_4bit = True
    try:
        _inject(vla, r, alpha, dropout, target_modules, init_lora_weights, adapt_vision_and_projector=False)
    finally:
        del vla.is_loaded_in_4bit
    apply_stage(vla, "qlora")
    return vla


def quantize_llm_4bit(vla: VLA, quant_type: str = "nf4", compute_dtype: torch.dtype | str = torch.float32) -> int:
    """Replace every ``nn.Linear`` in the LLM's decoder layers by a ``bnb.nn.Linear4bit`` holding
    the same (quantized) weights; returns how many layers were replaced.

    No double quantization of the scales, as OpenVLA's ``BitsAndBytesConfig`` (its default).
    """
    import bitsandbytes as bnb

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"Unknown 4-bit quant_type {quant_type!r}; choose one of {QUANT_TYPES}")
    compute_dtype = float_dtype(compute_dtype, "compute_dtype")
    if adapter_parameter_names(vla):
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
        _replace(layers, name, quantized.to(linear.weight.device))  # .to() quantizes the weight
    return len(linears)


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
            weight = _float_weight(base)
            for adapter in layer.active_adapters:
                weight += layer.get_delta_weight(adapter).to(weight.dtype)
            _replace(vla, name, _plain_linear(weight, base.bias))
        for name, module in [(n, m) for n, m in vla.named_modules() if _is_4bit(m)]:
            _replace(vla, name, _plain_linear(_float_weight(module), module.bias))
    if hasattr(vla, "peft_config"):
        del vla.peft_config  # peft records its configs on the model it injected into
    vla.requires_grad_(True)
    return vla


def adapter_parameter_names(vla: nn.Module) -> set[str]:
    """Names of all LoRA adapter parameters in the model (empty when none were injected)."""
    return {name for name, _ in vla.named_parameters() if ".lora_" in name}


def has_4bit_layers(vla: nn.Module) -> bool:
    return any(_is_4bit(m) for m in vla.modules())


def _inject(vla: VLA, r: int, alpha: int | None, dropout: float, target_modules: str | Sequence[str],
            init_lora_weights: str | bool, adapt_vision_and_projector: bool) -> None:
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
    inject_adapter_in_model(config, vla, adapter_name=ADAPTER_NAME)


def _target_names(vla: VLA, scopes: tuple[str, ...], target_modules: str | Sequence[str]) -> list[str]:
    """Full module names to adapt: linear layers under ``scopes``, never the LLM's output head."""
    output_head = vla.llm_backbone.llm.get_output_embeddings()
    linears = [name for name, m in vla.named_modules()
               if name.startswith(scopes) and (type(m) is nn.Linear or _is_4bit(m)) and m is not output_head]
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


def _is_4bit(module: nn.Module) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, bnb.nn.Linear4bit)


def _float_weight(linear: nn.Module) -> torch.Tensor:
    """A float copy of a linear layer's weight, dequantizing 4-bit weights."""
    if _is_4bit(linear):
        import bitsandbytes as bnb

        return bnb.functional.dequantize_4bit(linear.weight.data, linear.weight.quant_state)
    return linear.weight.data.clone()


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    linear.weight.data.copy_(weight)
    if bias is not None:
        linear.bias.data.copy_(bias.data.to(weight.dtype))
    return linear


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
