"""Load a VLA from any checkpoint form the platform knows, told apart by the files present.

One ``checkpoint=`` argument thus serves training (fine-tuning), eval, offline eval and serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vla.models.config import VLAConfig
from vla.models.io import CONFIG_FILE, load_vla
from vla.models.lora import inject_lora, merge_lora
from vla.models.oft_format import is_oft_checkpoint, load_oft
from vla.models.openvla_format import load_openvla
from vla.models.quantization import quantize_llm_4bit
from vla.models.vla import VLA

# What train.py's checkpoints hold next to Lightning's state: the model config, statistics, stage and
# LoRA settings under this key, and the model weights under "state_dict" with this prefix.
TRAINING_CHECKPOINT_KEY = "vla"
MODULE_PREFIX = "vla."
ACCEPTED_CHECKPOINTS = (
    "an exported VLA directory (vla_config.json + model.safetensors, from train.py or vla-export)",
    "a training checkpoint file *.ckpt written by train.py",
    "an OpenVLA-OFT checkpoint directory (an OpenVLA HF directory + action_head--*checkpoint.pt, "
    "optionally proprio_projector--/vision_backbone--*checkpoint.pt)",
    "an OpenVLA HF directory (config.json + model*.safetensors)",
    "a Prismatic run directory (config.json + checkpoints/*.pt) or one of its .pt checkpoints",
)


def load_checkpoint(checkpoint: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> VLA:
    """Load the VLA at ``checkpoint`` in eval mode, whichever of :data:`ACCEPTED_CHECKPOINTS` it is.

    ``dtype`` (e.g. ``torch.bfloat16``) casts the weights; None keeps the stored dtype.
    """
    path = Path(checkpoint)
    if path.is_dir() and (path / CONFIG_FILE).exists():
        return load_vla(path, device=device, dtype=dtype)
    if path.is_file() and path.suffix == ".ckpt":
        vla = load_training_checkpoint(path)
        return (vla.to(device=device, dtype=dtype) if dtype is not None else vla.to(device)).eval()
    if is_oft_checkpoint(path):  # before plain OpenVLA: an OFT directory is one plus its component files
        return load_oft(path, device=device, dtype=dtype)
    if (path.is_dir() and ((path / "config.json").exists() or (path / "checkpoints").is_dir())) or (
            path.is_file() and path.suffix == ".pt"):
        return load_openvla(path, device=device, dtype=dtype).eval()
    problem = "the path does not exist" if not path.exists() else "it is none of these"
    raise ValueError(f"Cannot load a policy from {str(checkpoint)!r} ({problem}). Accepted: "
                     + "; ".join(ACCEPTED_CHECKPOINTS))


def load_training_checkpoint(ckpt: str | Path) -> VLA:
    """A plain (LoRA-merged) VLA from a Lightning checkpoint written by ``train.py``; its ``training_info`` is the
    run's record (data, mixture, stage, command, ``image_aug``) plus the checkpoint's step."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored = state.get(TRAINING_CHECKPOINT_KEY)
    if stored is None:
        raise ValueError(f"{ckpt} was not written by vla's train.py (no {TRAINING_CHECKPOINT_KEY!r} entry)")
    if stored.get("trainable_only"):
        raise ValueError(
            f"{ckpt} is a trainable-only step checkpoint (checkpoint_trainable_only=true): it lacks the frozen base "
            "weights, so it cannot be loaded or exported on its own. Use the run's last.ckpt (always full), or resume "
            "the run from this file with train.py (resume=<path>), which rebuilds the base, and export its last.ckpt.")
    vla = VLA(VLAConfig.from_dict(stored["config"]), norm_stats=stored["norm_stats"],
              training_info={**stored.get("run", {}), "steps": state.get("global_step")})
    if stored["stage"] in ("lora", "qlora"):  # rebuild the adapters (and 4-bit layers) the weights belong to
        lora = dict(stored["lora"])
        if stored["stage"] == "qlora":
            quantize_llm_4bit(vla, lora.pop("quant_type", "nf4"), lora.pop("compute_dtype", "float32"))
        inject_lora(vla, **lora)
    weights = {k[len(MODULE_PREFIX):]: v for k, v in state["state_dict"].items() if k.startswith(MODULE_PREFIX)}
    missing, unexpected = vla.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt} does not match its stored config: missing {missing[:10]}, unexpected {unexpected[:10]}")
    if stored["stage"] in ("lora", "qlora"):
        vla = merge_lora(vla)
    return vla.eval()
