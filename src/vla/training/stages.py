"""Freeze stages: which parts of a VLA train, exactly as Prismatic's ``freeze_backbones(stage)``.

=======================  ===============  ===========  ==========================================
stage                    vision backbone  projector    LLM
=======================  ===============  ===========  ==========================================
align                    frozen           trains       frozen
finetune, vla-train      frozen           trains       trains
full-finetune,           trains           trains       trains
vla-full-train
vla-sandwich-train       trains           trains       frozen except the "last layer" modules
vla-last-layer-train     frozen           frozen       frozen except the "last layer" modules
lora, qlora              frozen           see below    base frozen, LoRA adapter weights train
=======================  ===============  ===========  ==========================================

"Last layer" follows Prismatic's ``last_layer_finetune_modules`` for Llama-2: the input
embeddings (``embed_tokens``), the last transformer block (``model.layers[-1]``) and the output
head (``lm_head``). The final RMSNorm (``model.norm``) is *not* part of it, so it stays frozen.

LoRA/QLoRA (adapters injected by :mod:`vla.training.peft` first): every base weight is frozen and
the adapter weights train. The projector trains in full unless it carries adapters itself. With
the default ``apply_lora`` (adapters on the LLM only) the small projector is thus the one fully
trained module, letting the frozen vision features re-align cheaply; with OpenVLA's exact
``finetune.py`` setting (adapters on every linear layer of the VLA) the projector's base is
frozen like everything else.

OpenVLA-OFT's added modules (the ``l1`` action head, the proprio projector, the FiLM ``scale``/``shift``
linears of each ViT block) are newly initialised, so they train in full in every stage, adapter stages
included (OFT's ``finetune.py`` trains them next to the LoRA adapters). The LLM's output head is frozen when
the action head is not ``tokens``: nothing reads it, and a trainable parameter without gradients stops DDP.

Precision is left to the trainer (Prismatic also casts a trainable vision backbone to float32).
Train/eval modes are left alone: Prismatic keeps the whole model in train mode (its backbones
have no dropout, so the mode does not change their outputs) and Lightning toggles the mode of the
whole module around validation anyway.
"""

from __future__ import annotations

from torch import nn

from vla.models.lora import adapter_parameter_names
from vla.models.quantization import has_4bit_layers
from vla.models.vla import VLA

STAGES = (
    "align", "finetune", "full-finetune", "vla-train", "vla-full-train",
    "vla-sandwich-train", "vla-last-layer-train", "lora", "qlora",
)
TOP_LEVEL_MODULES = ("vision_backbone", "projector", "llm_backbone", "action_head", "proprio_projector")

# stage -> (vision trains, projector trains, whole LLM trains, LLM "last layer" trains)
_DENSE_STAGES: dict[str, tuple[bool, bool, bool, bool]] = {
    "align": (False, True, False, False),
    "finetune": (False, True, True, True),
    "vla-train": (False, True, True, True),
    "full-finetune": (True, True, True, True),
    "vla-full-train": (True, True, True, True),
    "vla-sandwich-train": (True, True, False, True),
    "vla-last-layer-train": (False, False, False, True),
}


def last_layer_modules(vla: VLA) -> tuple[nn.Module, ...]:
    """Prismatic's ``last_layer_finetune_modules``: input embeddings, last block, output head."""
    llm = vla.llm_backbone.llm
    return llm.get_input_embeddings(), llm.model.layers[-1], llm.get_output_embeddings()


def apply_stage(vla: VLA, stage: str) -> dict[str, tuple[int, int]]:
    """Set ``requires_grad`` for ``stage``; returns {module: (trainable, total)} parameter counts."""
    if stage not in STAGES:
        raise ValueError(f"Unknown training stage {stage!r}; allowed stages: {', '.join(STAGES)}")
    if stage in ("lora", "qlora"):
        _apply_adapter_stage(vla, stage)
    else:
        vision, projector, llm, last_layer = _DENSE_STAGES[stage]
        vla.vision_backbone.requires_grad_(vision)
        vla.projector.requires_grad_(projector)
        vla.llm_backbone.requires_grad_(llm)
        for module in last_layer_modules(vla) if last_layer else ():
            module.requires_grad_(True)
    for module in vla.chunk_modules():
        module.requires_grad_(True)
    output_head = vla.llm_backbone.llm.get_output_embeddings()
    if vla.config.action_head != "tokens" and output_head.weight is not vla.llm_backbone.llm.get_input_embeddings().weight:
        output_head.requires_grad_(False)
    for param in vla.vision_backbone.unused_parameters():
        param.requires_grad_(False)
    return parameter_counts(vla)


def _apply_adapter_stage(vla: VLA, stage: str) -> None:
    adapter_names = adapter_parameter_names(vla)
    if not adapter_names:
        raise ValueError(f"Stage {stage!r} needs LoRA adapters in the model: call vla.training.peft.apply_"
                         f"{stage}(vla) first (it applies this stage itself)")
    if stage == "qlora" and not has_4bit_layers(vla):
        raise ValueError("Stage 'qlora' needs a 4-bit quantized LLM: build it with vla.training.peft.apply_qlora")
    projector_has_adapters = any(name.startswith("projector.") for name in adapter_names)
    for name, param in vla.named_parameters():
        param.requires_grad_(name in adapter_names or (name.startswith("projector.") and not projector_has_adapters))


def parameter_counts(vla: VLA) -> dict[str, tuple[int, int]]:
    """{"vision_backbone" | "projector" | "llm_backbone" | "action_head" | "proprio_projector" | "total":
    (trainable, total)} parameter counts (the last two only when the model has them).

    4-bit quantized weights count their stored (packed) elements, not the original matrix size.
    """
    counts = {}
    for name in TOP_LEVEL_MODULES:
        if getattr(vla, name, None) is None:
            continue
        params = list(getattr(vla, name).parameters())
        counts[name] = (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    counts["total"] = (sum(t for t, _ in counts.values()), sum(n for _, n in counts.values()))
    return counts


def trainable_parameter_summary(vla: VLA) -> str:
    """A plain-text table of trainable / total parameters per module, for training logs."""
    rows = [("module", "trainable", "total", "trainable %")]
    for name, (trainable, total) in parameter_counts(vla).items():
        rows.append((name, f"{trainable:,}", f"{total:,}", f"{100.0 * trainable / max(total, 1):.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
