"""Input/output transforms between raw samples and model tensors, kept apart from the model.

A :class:`VLAProcessor` bundles the model's image transform, prompt tokenizer and action
tokenizer. Data loaders call :meth:`training_sample` per transition and :meth:`collate` per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vla.data.prompt import IGNORE_INDEX, PromptTokenizer, pad_batch
from vla.models.action_tokenizer import ActionTokenizer
from vla.models.vision import ImageTransform


@dataclass
class VLAProcessor:
    image_transform: ImageTransform
    prompt_tokenizer: PromptTokenizer
    action_tokenizer: ActionTokenizer
    pad_token_id: int
    predict_stop_token: bool = True

    def training_sample(self, image: Image.Image | np.ndarray, instruction: str, normalized_action: np.ndarray) -> dict[str, torch.Tensor]:
        """One transition -> ``pixel_values``, ``input_ids``, ``labels`` (OpenVLA label masking)."""
        action = np.asarray(normalized_action)
        if action.ndim != 1:
            raise ValueError(f"action must be 1-D, got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN/inf: {action}")
        token_ids = self.action_tokenizer.encode(action)
        input_ids, labels = self.prompt_tokenizer.training_example(instruction, token_ids, self.predict_stop_token)
        return {"pixel_values": self.image_transform(image), "input_ids": input_ids, "labels": labels}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad ``input_ids`` (pad id) and ``labels`` (ignored); stack images; keep other keys as lists."""
        if not samples:
            raise ValueError("cannot collate an empty batch")
        input_ids = pad_batch([s["input_ids"] for s in samples], self.pad_token_id)
        labels = pad_batch([s["labels"] for s in samples], IGNORE_INDEX)
        lengths = torch.tensor([s["input_ids"].shape[0] for s in samples])
        batch: dict[str, Any] = {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long(),
        }
        for key in samples[0].keys() - batch.keys():
            batch[key] = [s[key] for s in samples]
        return batch
