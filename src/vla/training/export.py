"""Turn a training checkpoint into a standalone model directory: ``vla-export ckpt=<path.ckpt> out=<dir>``.

Writes safetensors weights + config + tokenizer + dataset_statistics.json (see :mod:`vla.models.io`);
LoRA adapters are merged, so eval and serve load the result without any training code.
"""

from __future__ import annotations

from pathlib import Path

from vla.models.checkpoints import load_training_checkpoint
from vla.models.io import save_vla


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Export ``ckpt`` (a train.py ``.ckpt``) to the directory ``out``; returns it (with a model card)."""
    model = load_training_checkpoint(ckpt)
    out_dir = save_vla(model, out, training=model.training_info)
    print(f"Exported {ckpt} -> {out_dir}")
    return out_dir
