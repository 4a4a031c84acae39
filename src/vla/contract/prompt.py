"""OpenVLA's prompt format and the token layout of one training/inference example.

Training sequence: ``[BOS] prompt [space] a_1 .. a_D [EOS]`` where only the action tokens and the
stop token carry labels. Inference feeds ``[BOS] prompt [space]`` and greedily decodes D tokens;
OpenVLA appends the empty-space token (Llama id 29871) at inference because its training text
``"Out: " + action_chars`` tokenizes to exactly that layout. We build the ids directly instead of
decoding and re-tokenizing action strings, which gives the same sequence without the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100


def openvla_prompt(instruction: str) -> str:
    """The exact OpenVLA prompt text (instruction lower-cased)."""
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError("instruction is empty")
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


@dataclass(frozen=True)
class PromptTokenizer:
    """Turns (instruction, action token ids) into input ids + labels with OpenVLA's masking."""

    tokenizer: object  # a transformers tokenizer
    bos_token_id: int
    eos_token_id: int
    space_token_id: int

    def prompt_ids(self, instruction: str) -> list[int]:
        """``[BOS] prompt [space]``: exactly what the model sees before the first action token."""
        ids = self.tokenizer(openvla_prompt(instruction), add_special_tokens=False)["input_ids"]
        ids = [self.bos_token_id, *ids]
        if ids[-1] != self.space_token_id:
            ids.append(self.space_token_id)
        return ids

    def training_example(self, instruction: str, action_token_ids: np.ndarray, predict_stop_token: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels), labels = IGNORE_INDEX everywhere but actions (+ stop token)."""
        prompt = self.prompt_ids(instruction)
        actions = [int(t) for t in np.asarray(action_token_ids).reshape(-1)]
        input_ids = torch.tensor([*prompt, *actions, self.eos_token_id], dtype=torch.long)
        labels = input_ids.clone()
        labels[: len(prompt)] = IGNORE_INDEX
        if not predict_stop_token:
            labels[-1] = IGNORE_INDEX
        return input_ids, labels


def pad_batch(sequences: list[torch.Tensor], pad_value: int, side: str = "right") -> torch.Tensor:
    """Pad 1-D tensors to a [B, L] tensor (right for training, left for batched generation)."""
    length = max(s.shape[0] for s in sequences)
    out = torch.full((len(sequences), length), pad_value, dtype=sequences[0].dtype)
    for i, s in enumerate(sequences):
        if side == "right":
            out[i, : s.shape[0]] = s
        else:
            out[i, length - s.shape[0]:] = s
    return out
