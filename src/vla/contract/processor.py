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
from torch.utils.data import default_collate

from vla.contract.action_tokenizer import ActionTokenizer
from vla.contract.image_transform import ImageTransform
from vla.contract.prompt import IGNORE_INDEX, PromptTokenizer, pad_batch


ACTION_HEAD_KINDS = ("tokens", "l1")

ImageInput = Image.Image | np.ndarray
# One image, or the views of one observation in ``image_views`` order.
Observation = ImageInput | Sequence[ImageInput]


@dataclass
class VLAProcessor:
    """The model's I/O transforms; ``action_head`` picks the target layout (docs/action-chunks.md).

    ``tokens`` (OpenVLA): the action's D bin tokens + stop token follow the prompt, ``chunk_size``
    must be 1. ``l1`` (OpenVLA-OFT): ``chunk_size * action_dim`` placeholder positions (the pad id;
    the model zeroes their embeddings) and the stop token follow the prompt, and the regression
    targets travel as ``actions`` beside them.
    """

    image_transform: ImageTransform
    prompt_tokenizer: PromptTokenizer
    action_tokenizer: ActionTokenizer
    pad_token_id: int
    predict_stop_token: bool = True
    action_head: str = "tokens"
    chunk_size: int = 1
    action_dim: int | None = None

    def __post_init__(self) -> None:
        if self.action_head not in ACTION_HEAD_KINDS:
            raise ValueError(f"Unknown action_head {self.action_head!r}; choose one of {ACTION_HEAD_KINDS}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if self.action_head == "tokens" and self.chunk_size != 1:
            raise ValueError(f"action_head 'tokens' predicts one action (chunk_size 1), got chunk_size={self.chunk_size}")
        if self.action_head == "l1" and (isinstance(self.action_dim, bool) or not isinstance(self.action_dim, int)
                                         or self.action_dim < 1):
            raise ValueError(f"action_head 'l1' needs action_dim (an integer >= 1), got {self.action_dim!r}")

    @property
    def num_placeholders(self) -> int:
        """K x D placeholder positions after the prompt (``l1`` only)."""
        return self.chunk_size * self.action_dim if self.action_head == "l1" else 0

    def pixel_values(self, images: Observation) -> torch.Tensor:
        """uint8 ``[3, H, W]`` for one image, ``[V, 3, H, W]`` for a sequence of V views."""
        if isinstance(images, Image.Image | np.ndarray):
            return self.image_transform(images)
        if not isinstance(images, Sequence) or isinstance(images, str | bytes) or len(images) == 0:
            raise ValueError(f"images must be an image or a non-empty sequence of view images, got {type(images).__name__}")
        return torch.stack([self.image_transform(image) for image in images])

    def training_sample(self, images: Observation, instruction: str, normalized_action: np.ndarray, *,
                        proprio: np.ndarray | None = None, action_pad_mask: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """One transition -> ``pixel_values``, ``input_ids``, ``labels`` (+ the ``l1`` targets, ``proprio``).

        ``tokens``: ``normalized_action`` is [D] (or [1, D]), labels follow OpenVLA's masking.
        ``l1``: it is [K, D]; labels are all ignored, ``action_mask`` marks the placeholders,
        ``actions`` holds the targets and ``action_pad_mask`` the steps past the episode's end.
        """
        action = np.asarray(normalized_action)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN/inf: {action}")
        if self.action_head == "tokens":
            sample = self._token_sample(action, instruction, action_pad_mask)
        else:
            sample = self._chunk_sample(action, instruction, action_pad_mask)
        sample = {"pixel_values": self.pixel_values(images), **sample}
        if proprio is not None:
            sample["proprio"] = _proprio_tensor(proprio)
        return sample

    def _token_sample(self, action: np.ndarray, instruction: str, action_pad_mask: np.ndarray | None) -> dict[str, torch.Tensor]:
        if action_pad_mask is not None:
            raise ValueError("action_pad_mask applies to action chunks (action_head 'l1'), not to the 'tokens' head")
        if action.ndim == 2 and action.shape[0] == 1:
            action = action[0]
        if action.ndim != 1:
            raise ValueError(f"action_head 'tokens' takes one action [D] (chunk_size 1), got shape {action.shape}")
        token_ids = self.action_tokenizer.encode(action)
        input_ids, labels = self.prompt_tokenizer.training_example(instruction, token_ids, self.predict_stop_token)
        return {"input_ids": input_ids, "labels": labels}

    def _chunk_sample(self, action: np.ndarray, instruction: str, action_pad_mask: np.ndarray | None) -> dict[str, torch.Tensor]:
        expected = (self.chunk_size, self.action_dim)
        if action.shape != expected:
            raise ValueError(f"action_head 'l1' takes an action chunk of shape [K, D] = {list(expected)}, got {list(action.shape)}")
        if action_pad_mask is None:
            pad = torch.zeros(self.chunk_size, dtype=torch.bool)
        else:
            pad = torch.as_tensor(np.asarray(action_pad_mask))
            if pad.dtype != torch.bool or pad.shape != (self.chunk_size,):
                raise ValueError(f"action_pad_mask must be bool [{self.chunk_size}], got {pad.dtype} {list(pad.shape)}")
        input_ids, action_mask = self._with_placeholders(self.prompt_tokenizer.prompt_ids(instruction))
        return {
            "input_ids": input_ids,
            "labels": torch.full_like(input_ids, IGNORE_INDEX),
            "action_mask": action_mask,
            "actions": torch.tensor(action, dtype=torch.float32),
            "action_pad_mask": pad,
        }

    def _with_placeholders(self, prompt: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompt`` + K x D pad ids (+ the stop token for ``l1``, as OpenVLA-OFT's sequences end), and the
        bool mask that is True at the placeholders."""
        if self.action_head == "tokens":
            return torch.tensor(prompt, dtype=torch.long), torch.zeros(len(prompt), dtype=torch.bool)
        placeholders = [self.pad_token_id] * self.num_placeholders
        input_ids = torch.tensor([*prompt, *placeholders, self.prompt_tokenizer.eos_token_id], dtype=torch.long)
        action_mask = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        action_mask[len(prompt):len(prompt) + len(placeholders)] = True
        return input_ids, action_mask

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad ``input_ids`` (pad id), ``labels`` (ignored), ``action_mask`` (False); stack images,
        chunk targets and proprio; keep other keys as lists."""
        if not samples:
            raise ValueError("cannot collate an empty batch")
        input_ids = pad_batch([s["input_ids"] for s in samples], self.pad_token_id)
        labels = pad_batch([s["labels"] for s in samples], IGNORE_INDEX)
        lengths = torch.tensor([s["input_ids"].shape[0] for s in samples])
        batch: dict[str, Any] = {
            # default_collate stacks straight into shared memory in a DataLoader worker, so sending the batch to
            # the main process does not copy the images again
            "pixel_values": default_collate([s["pixel_values"] for s in samples]),
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long(),
        }
        if "action_mask" in samples[0]:
            batch["action_mask"] = pad_batch([s["action_mask"] for s in samples], False)
        for key in ("actions", "action_pad_mask", "proprio"):
            if key in samples[0]:
                batch[key] = torch.stack([s[key] for s in samples])
        for key in samples[0].keys() - batch.keys():
            batch[key] = [s[key] for s in samples]
        return batch

    def inference_batch(self, images: Sequence[Observation], instructions: Sequence[str],
                        proprio: Sequence[np.ndarray] | np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """``pixel_values`` (uint8, [B,3,H,W] or [B,V,3,H,W]) and right-padded ``[BOS] prompt [space]`` ids
        + mask for generation; ``l1`` appends the K x D placeholders and returns ``action_mask``;
        ``proprio`` float32 [B, P] when given."""
        if len(images) != len(instructions):
            raise ValueError(f"Got {len(images)} images but {len(instructions)} instructions")
        if len(images) == 0:
            raise ValueError("inference needs at least one (image, instruction) pair")
        if proprio is not None and len(proprio) != len(images):
            raise ValueError(f"Got {len(images)} images but {len(proprio)} proprio vectors")
        prompts, masks = [], []
        for text in instructions:
            ids, mask = self._with_placeholders(self.prompt_tokenizer.prompt_ids(text))
            prompts.append(ids)
            masks.append(mask)
        lengths = torch.tensor([p.shape[0] for p in prompts])
        input_ids = pad_batch(prompts, self.pad_token_id, side="right")
        batch = {
            "pixel_values": torch.stack([self.pixel_values(image) for image in images]),
            "input_ids": input_ids,
            "attention_mask": (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long(),
        }
        if self.action_head == "l1":
            batch["action_mask"] = pad_batch(masks, False, side="right")
        if proprio is not None:
            batch["proprio"] = torch.stack([_proprio_tensor(p) for p in proprio])
        return batch

    def decode_actions(self, token_ids: torch.Tensor | np.ndarray) -> np.ndarray:
        """Generated action token ids [B, D] -> normalized actions at the bin centres (float64)."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.cpu().numpy()
        return self.action_tokenizer.decode(token_ids)


def _proprio_tensor(proprio: np.ndarray) -> torch.Tensor:
    """Normalized proprio [P] as float32, refusing other shapes and NaN/inf."""
    values = np.asarray(proprio, dtype=np.float32)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"proprio must be a non-empty 1-D vector [P], got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"proprio contains NaN/inf: {values}")
    return torch.from_numpy(values.copy())
