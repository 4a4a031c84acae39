"""The VLA: vision backbone -> projector -> LLM emitting discretized action tokens.

The multimodal sequence is ``[BOS] + projected patches + prompt/action tokens``; patch positions
never carry labels. :meth:`VLA.generate_action_tokens` is OpenVLA's greedy decoding of ``action_dim``
tokens with a KV cache; :class:`vla.policy.Policy` turns them into robot actions (bin centres,
then un-normalization with the dataset statistics the model carries in ``norm_stats``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.utils import ModelOutput

from vla.contract.processor import VLAProcessor
from vla.contract.prompt import IGNORE_INDEX, PromptTokenizer
from vla.contract.action_tokenizer import ActionTokenizer
from vla.models.config import VLAConfig
from vla.models.llm import LLMBackbone
from vla.models.projectors import build_projector
from vla.models.vision import VisionBackbone

DEFAULT_ACTION_DIM = 7


@dataclass
class LabelledOutput(ModelOutput):
    """Training output: the loss and the logits/targets at labelled positions only ([N, V], [N]).

    A ``ModelOutput`` (a registered pytree node), so FSDP2 finds its tensors and hooks the backward pass.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


class VLA(nn.Module):
    """OpenVLA-style policy. ``norm_stats`` has OpenVLA's ``dataset_statistics.json`` layout."""

    def __init__(self, config: VLAConfig, norm_stats: Mapping[str, Any] | None = None,
                 tokenizer_path: str | None = None, llm_config: PreTrainedConfig | None = None,
                 training_info: Mapping[str, Any] | None = None):
        """Build the backbones, projector and tokenizers ``config`` names.

        ``tokenizer_path``: a saved tokenizer (exports, checkpoints) instead of the registry's.
        ``llm_config``: a checkpoint's own LLM architecture instead of the registry's (OpenVLA import).
        ``training_info``: how the weights were trained (data, mixture, steps, ``image_aug``, ...), as
        checkpoints and exports record it; {} when unknown (e.g. OpenVLA's releases).
        """
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config.vision_backbone, pretrained=config.pretrained_vision,
                                              resize_strategy=config.image_resize_strategy)
        self.llm_backbone = LLMBackbone(config.llm_backbone, pretrained=config.pretrained_llm, tokenizer_path=tokenizer_path,
                                        attn_implementation=config.attn_implementation, llm_config=llm_config)
        self.projector = build_projector(config.projector, self.vision_backbone.embed_dim, self.llm_backbone.embed_dim)
        self.action_tokenizer = ActionTokenizer(vocab_size=self.llm_backbone.base_vocab_size, n_bins=config.n_action_bins)
        # The prompt style belongs to the LLM backbone (its registry entry), so exports and imports that
        # name the same backbone prompt the same way.
        self.prompt_tokenizer = PromptTokenizer(self.llm_backbone.tokenizer, self.llm_backbone.bos_token_id,
                                                self.llm_backbone.eos_token_id, self.llm_backbone.space_token_id,
                                                style=self.llm_backbone.spec.prompt_style)
        self.norm_stats: dict[str, Any] = dict(norm_stats or {})
        self.training_info: dict[str, Any] = dict(training_info or {})

    # ------------------------------------------------------------------ properties
    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def image_transform(self):
        return self.vision_backbone.image_transform

    @property
    def processor(self) -> VLAProcessor:
        """The input/output transforms between raw samples and this model's tensors."""
        return VLAProcessor(self.image_transform, self.prompt_tokenizer, self.action_tokenizer, self.tokenizer.pad_token_id)

    @property
    def tokenizer(self):
        return self.llm_backbone.tokenizer

    @property
    def num_patches(self) -> int:
        return self.vision_backbone.num_patches

    # ------------------------------------------------------------------ training forward
    def embed_multimodal(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Insert projected patches after BOS; extend the mask (ones) and labels (ignored)."""
        patches = self.projector(self.vision_backbone(pixel_values))
        text = self.llm_backbone.embed(input_ids)
        patches = patches.to(text.dtype)
        embeds = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ones = attention_mask.new_ones(attention_mask.shape[0], patches.shape[1])
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if labels is not None:
            ignore = labels.new_full((labels.shape[0], patches.shape[1]), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        return embeds, mask, labels

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None):
        """Without ``labels``: the HF causal-LM output (logits at every multimodal position).

        With ``labels``: a :class:`LabelledOutput` whose loss is HF's shifted causal-LM loss, with the
        output head applied only at the labelled positions (7 action tokens + stop token instead of
        ~290 positions of a 32k-wide vocabulary: the bulk of a small model's training compute).
        """
        embeds, mask, mm_labels = self.embed_multimodal(pixel_values, input_ids, attention_mask, labels)
        if mm_labels is None:
            return self.llm_backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        llm = self.llm_backbone.llm
        hidden = llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        targets = mm_labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = llm.get_output_embeddings()(hidden[:, :-1][keep])
        loss = nn.functional.cross_entropy(logits.float(), targets[keep])
        return LabelledOutput(loss=loss, logits=logits, targets=targets[keep])

    @torch.no_grad()
    def action_metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """OpenVLA's action-token accuracy and L1 (normalized space) over labelled positions.

        ``logits`` [N, V] and ``targets`` [N] as in :class:`LabelledOutput`; only targets that are
        action tokens count (not the stop token).
        """
        preds = logits.argmax(dim=-1)
        mask = self.action_tokenizer.is_action_token(targets)
        correct = ((preds == targets) & mask).sum()
        count = mask.sum()
        l1 = (self.action_tokenizer.decode_torch(preds[mask]) - self.action_tokenizer.decode_torch(targets[mask])).abs()
        return {
            "correct": correct,
            "count": count,
            "accuracy": correct.float() / count.clamp(min=1),
            "l1": l1.mean() if l1.numel() else torch.zeros((), device=logits.device, dtype=torch.float64),
        }

    @torch.no_grad()
    def action_metrics_by_dataset(self, logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                                  dataset_names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """:meth:`action_metrics` per dataset of a mixed batch (``labels`` [B, L] as given to :meth:`forward`).

        Labelled positions come row by row, so each is mapped back to its example's dataset.
        """
        rows = (labels[:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()
        owner = [name for name, n in zip(dataset_names, rows) for _ in range(n)]
        by_dataset = {}
        for name in sorted(set(dataset_names)):
            index = torch.tensor([i for i, o in enumerate(owner) if o == name], device=logits.device)
            by_dataset[name] = self.action_metrics(logits[index], targets[index])
        return by_dataset

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def generate_action_tokens(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               action_dim: int = DEFAULT_ACTION_DIM) -> torch.Tensor:
        """Greedy decoding of ``action_dim`` tokens per example with a KV cache ([B, action_dim]).

        Inputs as :meth:`VLAProcessor.inference_batch` makes them: uint8 images and right-padded
        ``[BOS] prompt [space]`` ids with their mask.
        """
        device = next(self.parameters()).device
        pixel_values, input_ids, attention_mask = pixel_values.to(device), input_ids.to(device), attention_mask.to(device)
        embeds, mask, _ = self.embed_multimodal(pixel_values, input_ids, attention_mask)
        # Left-align for generation: move each row's padding to the front.
        embeds, mask = _right_to_left_padding(embeds, mask)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # Only the last position's logits choose the first token: the output head (vocabulary-wide) runs
        # on one position instead of every patch and prompt position.
        out = self.llm_backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                                logits_to_keep=1)
        generated = []
        for step in range(action_dim):
            next_token = out.logits[:, -1].argmax(dim=-1)
            generated.append(next_token)
            if step == action_dim - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.llm_backbone(
                inputs_embeds=self.llm_backbone.embed(next_token[:, None]), attention_mask=mask,
                position_ids=positions, cache=out.cache, use_cache=True,
            )
        return torch.stack(generated, dim=1)


def _right_to_left_padding(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll each row so its padding (mask == 0, at the end) moves to the start."""
    lengths = mask.sum(dim=1)
    total = mask.shape[1]
    index = (torch.arange(total, device=mask.device)[None] - (total - lengths)[:, None]) % total
    embeds = torch.gather(embeds, 1, index[..., None].expand_as(embeds))
    mask = torch.gather(mask, 1, index)
    return embeds, mask
