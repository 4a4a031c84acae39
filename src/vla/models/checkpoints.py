"""Load a VLA from any checkpoint form the platform knows, told apart by the files present.

One ``checkpoint=`` argument thus serves training (fine-tuning), eval, offline eval and serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vla.models.factory import CONFIG_FILE, load_vla
from vla.models.openvla_format import load_openvla
from vla.models.vla import VLA

ACCEPTED_CHECKPOINTS = (
    "an exported VLA directory (vla_config.json + model.safetensors, from train.py or python -m vla.export)",
    "a training checkpoint file *.ckpt written by train.py",
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
        from vla.export import load_training_checkpoint  # training code only when a .ckpt is given

        vla = load_training_checkpoint(path)
        return (vla.to(device=device, dtype=dtype) if dtype is not None else vla.to(device)).eval()
    if (path.is_dir() and ((path / "config.json").exists() or (path / "checkpoints").is_dir())) or (
            path.is_file() and path.suffix == ".pt"):
        return load_openvla(path, device=device, dtype=dtype).eval()
    problem = "the path does not exist" if not path.exists() else "it is none of these"
    raise ValueError(f"Cannot load a policy from {str(checkpoint)!r} ({problem}). Accepted: "
                     + "; ".join(ACCEPTED_CHECKPOINTS))
