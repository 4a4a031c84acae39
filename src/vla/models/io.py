"""Save and load a VLA as a self-contained directory (no training code, no pickle).

The saved layout (what train.py and ``vla-export`` write and eval/serve load):
``model.safetensors`` (weights), ``vla_config.json`` (:meth:`VLAConfig.to_dict`),
``dataset_statistics.json`` (OpenVLA layout), the tokenizer files under ``tokenizer/``, a README
model card (:mod:`vla.models.card`) and, for a trained model, ``training.json`` (how it was trained:
data, stage, steps, ``image_aug`` ...; read back as ``vla.training_info``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from vla.atomic import atomic_write, write_bytes_atomic, write_json_atomic
from vla.models.card import CARD_FILE, model_card
from vla.models.config import VLAConfig
from vla.models.vla import VLA

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "vla_config.json"
STATS_FILE = "dataset_statistics.json"
TOKENIZER_DIR = "tokenizer"
TRAINING_FILE = "training.json"


def save_vla(vla: VLA, out_dir: str | os.PathLike, training: Mapping[str, Any] | None = None) -> Path:
    """Write weights, config, statistics, tokenizer and a README model card; files appear atomically.

    ``training`` (data, mixture, stage, image_aug, steps, final metrics, command) goes into the model card and,
    machine-readable, into ``training.json`` (eval reads ``image_aug`` there to decide on the center crop).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # save_model de-duplicates tied weights (e.g. Qwen's shared embedding / lm_head).
    atomic_write(out / WEIGHTS_FILE, lambda p: save_model(vla, str(p), metadata={"format": "pt"}))
    write_json_atomic(out / CONFIG_FILE, vla.config.to_dict())
    write_json_atomic(out / STATS_FILE, vla.norm_stats)
    vla.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    if training is not None:
        write_json_atomic(out / TRAINING_FILE, dict(training))
    else:
        (out / TRAINING_FILE).unlink(missing_ok=True)  # a stale one from an earlier export would misdescribe it
    write_bytes_atomic(out / CARD_FILE, model_card(vla, str(out), training).encode("utf-8"))
    return out


def load_vla(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> VLA:
    """Load a directory written by :func:`save_vla` (no training code, no pickle).

    ``vla.training_info`` is its ``training.json`` ({} when the export has none).
    """
    path = Path(path)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, STATS_FILE) if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not an exported VLA directory: missing {missing}")
    config = VLAConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    stats = json.loads((path / STATS_FILE).read_text())
    tokenizer = path / TOKENIZER_DIR
    training_file = path / TRAINING_FILE
    training_info = json.loads(training_file.read_text()) if training_file.is_file() else {}
    vla = VLA(config, norm_stats=stats, tokenizer_path=str(tokenizer) if tokenizer.exists() else None,
              training_info=training_info)
    missing, unexpected = load_model(vla, str(path / WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise ValueError(f"Weights in {path} do not match its config: missing {sorted(missing)[:10]}, "
                         f"unexpected {sorted(unexpected)[:10]}")
    vla.to(device=device, dtype=dtype) if dtype is not None else vla.to(device)
    return vla.eval()
