"""LoRA and QLoRA fine-tuning setups for a VLA: adapters in (``vla.models.lora``), then the freeze stage.

Hyper-parameters default to OpenVLA's ``vla-scripts/finetune.py``: ``r=32``,
``lora_alpha=min(r, 16)``, ``lora_dropout=0.0``, ``target_modules="all-linear"``,
``init_lora_weights="gaussian"``. OpenVLA puts adapters on every linear layer of the whole VLA;
here the LLM's by default, and the projector trains in full (see :mod:`vla.training.stages`);
``adapt_vision_and_projector=True`` reproduces OpenVLA's choice.

QLoRA quantizes the LLM's decoder-layer linears to bitsandbytes NF4 (``vla.models.quantization``)
and then adds LoRA on top. OpenVLA's ``prepare_model_for_kbit_training`` also casts the
non-quantized weights to float32 and turns on gradient checkpointing; our models are built in
float32 already, and gradient checkpointing is a trainer setting, not done here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vla.models.lora import inject_lora
from vla.models.quantization import quantize_llm_4bit
from vla.models.vla import VLA
from vla.training.stages import apply_stage


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
    inject_lora(vla, r, alpha, dropout, target_modules, init_lora_weights, adapt_vision_and_projector)
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
    inject_lora(vla, r, alpha, dropout, target_modules, init_lora_weights, adapt_vision_and_projector=False)
    apply_stage(vla, "qlora")
    return vla
