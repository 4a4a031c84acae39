"""Input/output transforms between raw samples and model tensors, kept apart from the model.

A :class:`VLAProcessor` bundles the model's image transform, prompt tokenizer and action
tokenizer. Data loaders call :meth:`training_sample` per transition and :meth:`collate` per batch;
inference calls :meth:`inference_batch` before the model and :meth:`decode_actions` after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vla.contract.action_tokenizer import ActionTokenizer
from vla.contract.image_transform import ImageTransform
from vla.contract.prompt import IGNORE_INDEX, PromptTokenizer, pad_batch


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

    def inference_batch(self, images: Sequence[Image.Image | np.ndarray], instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """``pixel_values`` (uint8) and right-padded ``[BOS] prompt [space]`` ids + mask for generation."""
        if len(images) != len(instructions):
            raise ValueError(f"Got {len(images)} images but {len(instructions)} instructions")
        if len(images) == 0:
            raise ValueError("inference needs at least one (image, instruction) pair")
        prompts = [torch.tensor(self.prompt_tokenizer.prompt_ids(text)) for text in instructions]
        lengths = torch.tensor([p.shape[0] for p in prompts])
        input_ids = pad_batch(prompts, self.pad_token_id, side="right")
        return {
            "pixel_values": torch.stack([self.image_transform(image) for image in images]),
            "input_ids": input_ids,
            "attention_mask": (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long(),
        }

    def decode_actions(self, token_ids: torch.Tensor | np.ndarray) -> np.ndarray:
        """Generated action token ids [B, D] -> normalized actions at the bin centres (float64)."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.cpu().numpy()
        return self.action_tokenizer.decode(token_ids)
