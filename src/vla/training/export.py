"""Turn a training checkpoint into a standalone model directory: ``vla-export ckpt=<path.ckpt> out=<dir>``.

Writes safetensors weights + config + tokenizer + dataset_statistics.json (see :mod:`vla.models.io`);
LoRA adapters are merged, so eval and serve load the result without any training code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vla.models.checkpoints import TRAINING_CHECKPOINT_KEY, load_training_checkpoint
from vla.models.io import save_vla


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Export ``ckpt`` (a train.py ``.ckpt``) to the directory ``out``; returns it (with a model card)."""
    model = load_training_checkpoint(ckpt)  # checks the file before anything else reads it
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    training = {**state[TRAINING_CHECKPOINT_KEY].get("run", {}), "steps": state.get("global_step")}
    out_dir = save_vla(model, out, training=training)
    print(f"Exported {ckpt} -> {out_dir}")
    return out_dir
