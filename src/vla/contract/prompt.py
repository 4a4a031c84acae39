"""OpenVLA's prompt formats and the token layout of one training/inference example.

Prompt styles follow Prismatic's prompt builders (``prismatic/models/backbones/llm/prompting/``),
chosen by the LLM backbone (``LLMSpec.prompt_style``) as Prismatic's ``prompt_builder_fn`` does:

- ``pure`` (``PurePromptBuilder``; ``llama2-*-pure``, OpenVLA-7B):
  ``In: What action should the robot take to {instruction}?\\nOut:``
- ``vicuna-v15`` (``VicunaV15ChatPromptBuilder``; ``vicuna-v15-*``, ``openvla-7b-v01``,
  ``siglip-224px+7b``): ``{VICUNA_V15_SYSTEM_PROMPT} USER: What action ...? ASSISTANT:``
- ``llama2-chat`` (``LLaMa2ChatPromptBuilder``; ``llama2-*-chat``):
  ``[INST] <<SYS>\\n{LLAMA2_CHAT_SYSTEM_PROMPT}\\n<</SYS>>\\n\\nWhat action ...? [/INST]``
  (Prismatic's opening tag really is ``<<SYS>`` with one ``>``; reproduced as is.)

The text is what the builder's ``get_prompt()`` returns after the human turn (the model's turn
begins after it; the trailing space of ``"Out: "`` / ``"ASSISTANT: "`` / ``"[/INST] "`` is
stripped, and the instruction is lower-cased).

Training sequence: ``[BOS] prompt [space] a_1 .. a_D [EOS]`` where only the action tokens and the
stop token carry labels, whatever the style (``RLDSBatchTransform`` labels the last ``D + 1``
ids of the full conversation). Inference feeds ``[BOS] prompt [space]`` and greedily decodes D
tokens; OpenVLA appends the empty-space token (Llama id 29871) at inference because its training
text ``prompt + " " + action_chars + "</s>"`` tokenizes to exactly that layout. We build the ids
directly instead of decoding and re-tokenizing action strings, which gives the same sequence
without the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IGNORE_INDEX = -100
# Distinct instructions whose prompt ids a PromptTokenizer remembers (emptied when full); an episode repeats its
# instruction at every step, so a loader's samples mostly hit.
PROMPT_CACHE_SIZE = 4096

PROMPT_STYLES = ("pure", "vicuna-v15", "llama2-chat")
# Prismatic's default system prompts for model family "openvla" (identical to "prismatic").
VICUNA_V15_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_CHAT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)


def check_prompt_style(style: str) -> str:
    if style not in PROMPT_STYLES:
        raise ValueError(f"Unknown prompt style {style!r}; choose one of {PROMPT_STYLES}")
    return style


def openvla_prompt(instruction: str, style: str = "pure") -> str:
    """The exact OpenVLA prompt text for ``style`` (instruction lower-cased), up to the model's turn."""
    check_prompt_style(style)
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError("instruction is empty")
    message = f"What action should the robot take to {instruction.lower()}?"
    if style == "vicuna-v15":
        return f"{VICUNA_V15_SYSTEM_PROMPT} USER: {message} ASSISTANT:"
    if style == "llama2-chat":
        return f"[INST] <<SYS>\n{LLAMA2_CHAT_SYSTEM_PROMPT}\n<</SYS>>\n\n{message} [/INST]"
    return f"In: {message}\nOut:"


@dataclass(frozen=True)
class PromptTokenizer:
    """Turns (instruction, action token ids) into input ids + labels with OpenVLA's masking.

    ``style`` is the LLM backbone's prompt style (:data:`PROMPT_STYLES`).
    """

    tokenizer: object  # a transformers tokenizer
    bos_token_id: int
    eos_token_id: int
    space_token_id: int
    style: str = "pure"
    _prompt_cache: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        check_prompt_style(self.style)

    def prompt_text(self, instruction: str) -> str:
        """The prompt text in this tokenizer's style (without BOS)."""
        return openvla_prompt(instruction, self.style)

    def prompt_ids(self, instruction: str) -> list[int]:
        """``[BOS] prompt [space]``: exactly what the model sees before the first action token.

        Memoized per instruction (:data:`PROMPT_CACHE_SIZE`): the tokenizer call costs ~30 us, a
        few percent of a training sample's CPU time, and the ids of a text never change.
        """
        ids = self._prompt_cache.get(instruction) if isinstance(instruction, str) else None
        if ids is None:
            ids = tuple(self._tokenize_prompt(instruction))
            if len(self._prompt_cache) >= PROMPT_CACHE_SIZE:
                self._prompt_cache.clear()
            self._prompt_cache[instruction] = ids
        return list(ids)

    def _tokenize_prompt(self, instruction: str) -> list[int]:
        """The uncached ids (see :meth:`prompt_ids`)."""
        ids = self.tokenizer(self.prompt_text(instruction), add_special_tokens=False)["input_ids"]
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
