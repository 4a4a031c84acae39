"""Build a VLA from plain config values, and save/load it as a self-contained directory.

The saved layout (what ``python -m vla.export`` writes and eval/serve load):
``model.safetensors`` (weights), ``vla_config.json`` (the ``build_vla`` arguments),
``dataset_statistics.json`` (OpenVLA layout) and the tokenizer files under ``tokenizer/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from vla.models.llm import LLMBackbone
from vla.models.vision import VisionBackbone
from vla.models.vla import VLA

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "vla_config.json"
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STATS_FILE = "dataset_statistics.json"
TOKENIZER_DIR = "tokenizer"


def float_dtype(dtype: torch.dtype | str, what: str = "dtype") -> torch.dtype:
    """A weight/compute dtype from config: a floating ``torch.dtype`` or one of ``FLOAT_DTYPES``' names."""
    resolved = FLOAT_DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"Unknown {what} {dtype!r}; choose one of {sorted(FLOAT_DTYPES)}")
    return resolved


def build_vla(
    vision_backbone: str,
    llm_backbone: str,
    projector: str = "fused-gelu-mlp",
    image_resize_strategy: str = "resize-naive",
    pretrained_vision: bool = False,
    pretrained_llm: bool = False,
    n_action_bins: int = 256,
    model_id: str | None = None,
    norm_stats: Mapping[str, Any] | None = None,
    tokenizer_path: str | None = None,
    attn_implementation: str = "sdpa",
) -> VLA:
    """The one constructor used by configs (``_target_: vla.models.build_vla``) and loaders."""
    vla = VLA(
        VisionBackbone(vision_backbone, pretrained=pretrained_vision, resize_strategy=image_resize_strategy),
        LLMBackbone(llm_backbone, pretrained=pretrained_llm, tokenizer_path=tokenizer_path, attn_implementation=attn_implementation),
        projector=projector,
        n_action_bins=n_action_bins,
        norm_stats=norm_stats,
        model_id=model_id,
    )
    vla.config = {
        "vision_backbone": vision_backbone, "llm_backbone": llm_backbone, "projector": projector,
        "image_resize_strategy": image_resize_strategy, "n_action_bins": n_action_bins, "model_id": vla.model_id,
        "attn_implementation": attn_implementation,
    }
    return vla


def save_vla(vla: VLA, out_dir: str | os.PathLike) -> Path:
    """Write weights, config, statistics and tokenizer; files appear atomically (tmp + rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # save_model de-duplicates tied weights (e.g. Qwen's shared embedding / lm_head).
    _atomic(out / WEIGHTS_FILE, lambda p: save_model(vla, str(p), metadata={"format": "pt"}))
    _atomic(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(vla.config, indent=2)))
    _atomic(out / STATS_FILE, lambda p: p.write_text(json.dumps(vla.norm_stats, indent=2)))
    vla.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    return out


def load_vla(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> VLA:
    """Load a directory written by :func:`save_vla` (no training code, no pickle)."""
    path = Path(path)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, STATS_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not an exported VLA directory: missing {missing}")
    config = json.loads((path / CONFIG_FILE).read_text())
    stats = json.loads((path / STATS_FILE).read_text())
    tokenizer = path / TOKENIZER_DIR
    vla = build_vla(**config, norm_stats=stats, tokenizer_path=str(tokenizer) if tokenizer.exists() else None)
    missing, unexpected = load_model(vla, str(path / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise ValueError(f"Weights in {path} do not match its config: missing {sorted(missing)[:10]}, "
                         f"unexpected {sorted(unexpected)[:10]}")
    vla.to(device=device, dtype=dtype) if dtype is not None else vla.to(device)
    return vla.eval()


def _atomic(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, target)
