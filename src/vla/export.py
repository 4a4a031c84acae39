"""Turn a training checkpoint into a standalone model directory (and load .ckpt files directly).

``python -m vla.export ckpt=<path.ckpt> out=<dir>`` writes safetensors weights + config +
tokenizer + dataset_statistics.json (see :mod:`vla.models.factory`); LoRA adapters are merged,
so eval and serve load the result without any training code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vla.models.factory import build_vla, save_vla
from vla.models.vla import VLA
from vla.training.module import CHECKPOINT_KEY

MODULE_PREFIX = "vla."


def load_training_checkpoint(ckpt: str | Path) -> VLA:
    """A plain (LoRA-merged) VLA from a Lightning checkpoint written by ``train.py``."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored = state.get(CHECKPOINT_KEY)
    if stored is None:
        raise ValueError(f"{ckpt} was not written by vla's train.py (no {CHECKPOINT_KEY!r} entry)")
    vla = build_vla(**stored["config"], norm_stats=stored["norm_stats"])
    if stored["stage"] in ("lora", "qlora"):
        from vla.training.peft import apply_lora, apply_qlora

        (apply_lora if stored["stage"] == "lora" else apply_qlora)(vla, **stored["lora"])
    weights = {k[len(MODULE_PREFIX):]: v for k, v in state["state_dict"].items() if k.startswith(MODULE_PREFIX)}
    missing, unexpected = vla.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{ckpt} does not match its stored config: missing {missing[:10]}, unexpected {unexpected[:10]}")
    if stored["stage"] in ("lora", "qlora"):
        from vla.training.peft import merge_lora

        vla = merge_lora(vla)
    return vla.eval()


def main(argv: list[str]) -> Path:
    args = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    unknown = set(args) - {"ckpt", "out"}
    if unknown or not {"ckpt", "out"} <= set(args):
        raise SystemExit(f"usage: python -m vla.export ckpt=<path.ckpt> out=<dir> (got {argv})")
    out = save_vla(load_training_checkpoint(args["ckpt"]), args["out"])
    print(f"Exported {args['ckpt']} -> {out}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
