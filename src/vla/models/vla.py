"""The VLA: vision backbone -> projector -> LLM -> action head (docs/action-chunks.md).

The multimodal sequence is ``[BOS] + patches(view 1) + ... + patches(view V) + [proprio token] +
prompt/target ids``; the prefix positions never carry labels. With the ``tokens`` head (OpenVLA),
:meth:`VLA.generate_action_tokens` greedily decodes ``action_dim`` tokens with a KV cache and
:class:`vla.policy.Policy` turns them into robot actions (bin centres, then un-normalization with the
dataset statistics the model carries in ``norm_stats``). With the ``l1`` head (OpenVLA-OFT), K x D
placeholder positions (zero input embeddings) and the stop token follow the prompt, the whole sequence
attends bidirectionally (as OpenVLA-OFT), and :meth:`VLA.predict_action_chunk` regresses the normalized [K, D] chunk from their final hidden
states in one forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig
from transformers.utils import ModelOutput

from vla.contract.processor import VLAProcessor
from vla.contract.prompt import IGNORE_INDEX, PromptTokenizer
from vla.contract.action_tokenizer import ActionTokenizer
from vla.models.config import VLAConfig
from vla.models.film import FiLMedVisionTransformerBlock
from vla.models.heads import ACTION_HEADS, REGRESSION_LOSSES
from vla.models.llm import LLMBackbone
from vla.models.projectors import ProprioProjector, build_projector
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


@dataclass
class ChunkOutput(ModelOutput):
    """Chunk-head output: mean L1 ``loss`` (when ``actions`` were given), ``predicted`` and target
    ``actions``, both normalized [B, K, D] float32. A ``ModelOutput`` for FSDP2, as :class:`LabelledOutput`."""

    loss: torch.Tensor | None = None
    predicted: torch.Tensor | None = None
    actions: torch.Tensor | None = None


class VLA(nn.Module):
    """OpenVLA-style policy. ``norm_stats`` has OpenVLA's ``dataset_statistics.json`` layout."""

    def __init__(self, config: VLAConfig, norm_stats: Mapping[str, Any] | None = None,
                 tokenizer_path: str | None = None, llm_config: PreTrainedConfig | None = None,
                 training_info: Mapping[str, Any] | None = None):
        """Build the backbones, projector and tokenizers ``config`` names.

        ``tokenizer_path``: a saved tokenizer (exports, checkpoints) instead of the registry's.
        ``llm_config``: a checkpoint's own LLM architecture instead of the registry's (OpenVLA import); without
        it, ``config.llm_architecture`` (where an imported model recorded its own) or the registry's.
        ``training_info``: how the weights were trained (data, mixture, steps, ``image_aug``, ...), as
        checkpoints and exports record it; {} when unknown (e.g. OpenVLA's releases).
        """
        super().__init__()
        self.config = config
        if llm_config is None and config.llm_architecture is not None:
            llm_config = AutoConfig.for_model(**config.llm_architecture)
        self.vision_backbone = VisionBackbone(config.vision_backbone, pretrained=config.pretrained_vision,
                                              resize_strategy=config.image_resize_strategy)
        self.llm_backbone = LLMBackbone(config.llm_backbone, pretrained=config.pretrained_llm, tokenizer_path=tokenizer_path,
                                        attn_implementation=config.llm_attn_implementation, llm_config=llm_config)
        self.projector = build_projector(config.projector, self.vision_backbone.embed_dim, self.llm_backbone.embed_dim)
        self.add_chunk_modules()
        self.action_tokenizer = ActionTokenizer(vocab_size=self.llm_backbone.base_vocab_size, n_bins=config.n_action_bins)
        # The prompt style belongs to the LLM backbone (its registry entry), so exports and imports that
        # name the same backbone prompt the same way.
        self.prompt_tokenizer = PromptTokenizer(self.llm_backbone.tokenizer, self.llm_backbone.bos_token_id,
                                                self.llm_backbone.eos_token_id, self.llm_backbone.space_token_id,
                                                style=self.llm_backbone.spec.prompt_style)
        self.norm_stats: dict[str, Any] = dict(norm_stats or {})
        self.training_info: dict[str, Any] = dict(training_info or {})

    def add_chunk_modules(self) -> list[nn.Module]:
        """Create, freshly initialised, the chunk-policy modules ``self.config`` enables; returns them
        (:meth:`chunk_modules`).

        They exist only when enabled, so an OpenVLA-style model keeps its exact parameters. ``__init__`` calls
        this; so does ``load_openvla`` after giving a loaded OpenVLA (which has none of them) a chunk config.
        """
        llm_dim = self.llm_backbone.embed_dim
        if self.config.film:
            self.vision_backbone.add_film(llm_dim)
        if self.config.proprio_dim:
            self.proprio_projector = ProprioProjector(llm_dim, self.config.proprio_dim)
        head = ACTION_HEADS[self.config.action_head]
        if head.build is not None:
            self.action_head = head.build(llm_dim, self.config.action_dim)
        return self.chunk_modules()

    def chunk_modules(self) -> list[nn.Module]:
        """The modules OpenVLA-OFT adds to OpenVLA, where present: action head, proprio projector, FiLM
        ``scale``/``shift`` linears. OFT trains them in full (never through LoRA adapters)."""
        modules = [m for m in (getattr(self, "action_head", None), getattr(self, "proprio_projector", None))
                   if m is not None]
        for block in self.vision_backbone.modules():
            if isinstance(block, FiLMedVisionTransformerBlock):
                modules.extend((block.scale, block.shift))
        return modules

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
        return VLAProcessor(self.image_transform, self.prompt_tokenizer, self.action_tokenizer, self.tokenizer.pad_token_id,
                            action_head=self.config.action_head, chunk_size=self.config.chunk_size,
                            action_dim=self.config.action_dim)

    @property
    def tokenizer(self):
        return self.llm_backbone.tokenizer

    @property
    def num_patches(self) -> int:
        """Patches per camera view."""
        return self.vision_backbone.num_patches

    @property
    def num_prefix_tokens(self) -> int:
        """Positions inserted after BOS: every view's patches, then the proprio token when there is one."""
        return self.num_patches * len(self.config.image_views) + (1 if self.config.proprio_dim else 0)

    # ------------------------------------------------------------------ training forward
    def embed_multimodal(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None, *, proprio: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Insert the prefix (projected patches of every view, then the proprio token) after BOS; extend the
        mask (ones) and labels (ignored). Placeholders (``action_mask``) get zero input embeddings."""
        text = self.llm_backbone.embed(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if action_mask is not None:
            text = text.masked_fill(action_mask.bool()[..., None], 0)
        language = _instruction_embedding(text, attention_mask, labels, action_mask) if self.config.film else None
        prefix = self._prefix(pixel_values, proprio, language).to(text.dtype)
        embeds = torch.cat([text[:, :1], prefix, text[:, 1:]], dim=1)
        mask = _insert_prefix(attention_mask, prefix.shape[1], 1)
        if labels is not None:
            labels = _insert_prefix(labels, prefix.shape[1], IGNORE_INDEX)
        return embeds, mask, labels

    def _prefix(self, pixel_values: torch.Tensor, proprio: torch.Tensor | None,
                language: torch.Tensor | None) -> torch.Tensor:
        """[B, num_prefix_tokens, llm_dim]: the views share the vision backbone (one pass over B*V images)."""
        views = len(self.config.image_views)
        if pixel_values.dim() == 5:
            batch, given = pixel_values.shape[:2]
            pixel_values = pixel_values.flatten(0, 1)
        else:
            batch, given = pixel_values.shape[0], 1
        if given != views:
            raise ValueError(f"pixel_values hold {given} view(s) per example but this VLA takes "
                             f"{views}: {list(self.config.image_views)}")
        if language is not None:
            language = language.repeat_interleave(views, dim=0)
        features = self.vision_backbone(pixel_values, language)
        features = features.to(next(self.projector.parameters()).dtype)  # towers may run in another dtype (Policy)
        patches = self.projector(features.reshape(batch, views * features.shape[1], features.shape[2]))
        size = self.config.proprio_dim
        if not size:
            if proprio is not None:
                raise ValueError("this VLA takes no proprio (proprio_dim 0); build it with use_proprio=True to use it")
            return patches
        if proprio is None:
            raise ValueError(f"this VLA takes proprio (proprio_dim {size}): pass proprio [B, {size}]")
        if tuple(proprio.shape) != (batch, size):
            raise ValueError(f"proprio must be [B, {size}] = [{batch}, {size}], got {tuple(proprio.shape)}")
        token = self.proprio_projector(proprio.to(device=patches.device, dtype=patches.dtype))
        return torch.cat([patches, token[:, None]], dim=1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, proprio: torch.Tensor | None = None,
                action_mask: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                regression_loss: str = "l1"):
        """``tokens`` head without ``labels``: the HF causal-LM output (logits at every multimodal position).

        With ``labels``: a :class:`LabelledOutput` whose loss is HF's shifted causal-LM loss, with the
        output head applied only at the labelled positions (7 action tokens + stop token instead of
        ~290 positions of a 32k-wide vocabulary: the bulk of a small model's training compute).

        ``l1`` head: a :class:`ChunkOutput`; ``action_mask`` (True at the placeholders) is required,
        ``actions`` [B, K, D] (normalized) gives the loss (``regression_loss``: ``l1`` as OFT, or ``mse``),
        ``labels`` (all ignored for l1) are unused.
        """
        if self.config.action_head != "tokens":
            predicted = self.action_head(self._placeholder_states(pixel_values, input_ids, attention_mask, action_mask,
                                                                  proprio)).float()
            if actions is None:
                return ChunkOutput(predicted=predicted)
            if actions.shape != predicted.shape:
                raise ValueError(f"actions must be [B, K, D] = {tuple(predicted.shape)}, got {tuple(actions.shape)}")
            actions = actions.to(device=predicted.device, dtype=torch.float32)
            if regression_loss not in REGRESSION_LOSSES:
                raise ValueError(f"regression_loss must be one of {sorted(REGRESSION_LOSSES)}, got {regression_loss!r}")
            return ChunkOutput(loss=REGRESSION_LOSSES[regression_loss](predicted, actions), predicted=predicted,
                               actions=actions)
        if action_mask is not None or actions is not None:
            raise ValueError("action_mask and actions are for chunk heads; this VLA's action_head is 'tokens'")
        embeds, mask, mm_labels = self.embed_multimodal(pixel_values, input_ids, attention_mask, labels, proprio=proprio)
        if mm_labels is None:
            return self.llm_backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        llm = self.llm_backbone.llm
        hidden = llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        targets = mm_labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = llm.get_output_embeddings()(hidden[:, :-1][keep])
        loss = nn.functional.cross_entropy(logits.float(), targets[keep])
        return LabelledOutput(loss=loss, logits=logits, targets=targets[keep])

    def _placeholder_states(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor | None, action_mask: torch.Tensor | None,
                            proprio: torch.Tensor | None) -> torch.Tensor:
        """Final hidden states at each row's K x D placeholders, in order: [B, K*D, H]."""
        if action_mask is None:
            raise ValueError(f"the {self.config.action_head!r} head needs action_mask (True at the K x D "
                             "placeholders), as VLAProcessor makes it")
        if action_mask.shape != input_ids.shape:
            raise ValueError(f"action_mask must have input_ids' shape {list(input_ids.shape)}, got {list(action_mask.shape)}")
        action_mask = action_mask.bool()
        expected = self.config.chunk_size * self.config.action_dim
        counts = action_mask.sum(dim=1)
        if (counts != expected).any():
            raise ValueError(f"every row needs chunk_size x action_dim = {self.config.chunk_size} x "
                             f"{self.config.action_dim} = {expected} placeholders, got {counts.tolist()}")
        embeds, mask, _ = self.embed_multimodal(pixel_values, input_ids, attention_mask, proprio=proprio,
                                                action_mask=action_mask)
        placeholders = _insert_prefix(action_mask, embeds.shape[1] - input_ids.shape[1], False)
        attention = self._chunk_attention_mask(mask, embeds.dtype)
        hidden = self.llm_backbone.llm.model(inputs_embeds=embeds, attention_mask=attention,
                                             use_cache=False).last_hidden_state
        return hidden[placeholders].reshape(hidden.shape[0], expected, hidden.shape[2])

    def _chunk_attention_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, 1, T, T] mask for parallel decoding: fully bidirectional over each row's unpadded positions.

        OpenVLA-OFT's released policies were trained and run this way (its transformers fork calls SDPA
        with ``is_causal=False`` and masks padding keys only), so the same weights give the same actions.
        Every position also sees itself, so padded rows never have all keys masked (no NaN from them).
        Boolean for SDPA; additive (0 / dtype min) for eager attention, which adds it to the scores.
        """
        length = mask.shape[1]
        arange = torch.arange(length, device=mask.device)
        allowed = (mask.bool()[:, None, :] | (arange[:, None] == arange[None, :])[None])[:, None]
        if self.llm_backbone.llm.config._attn_implementation == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(~allowed, torch.finfo(dtype).min)
        return allowed

    @torch.no_grad()
    def chunk_metrics(self, out: ChunkOutput, action_pad_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1 (normalized space) over real chunk steps only (``action_pad_mask`` [B, K] True past the episode's end).

        ``l1`` overall, ``l1_per_dim`` [D], ``l1_per_step`` [K], with ``count`` (real steps) and
        ``count_per_step`` [K] to weight running means; an all-padded step has L1 0 and count 0.
        """
        if out.predicted is None or out.actions is None:
            raise ValueError("chunk_metrics needs a ChunkOutput with predicted and actions (call forward with actions)")
        error = (out.predicted.float() - out.actions.float()).abs()
        real = ~action_pad_mask.to(device=error.device, dtype=torch.bool)
        if real.shape != error.shape[:2]:
            raise ValueError(f"action_pad_mask must be [B, K] = {tuple(error.shape[:2])}, got {tuple(real.shape)}")
        error = error * real[..., None]
        dims = error.shape[2]
        count_per_step = real.sum(dim=0)
        count = count_per_step.sum()
        return {
            "l1": error.sum() / (count.clamp(min=1) * dims),
            "l1_per_dim": error.sum(dim=(0, 1)) / count.clamp(min=1),
            "l1_per_step": error.sum(dim=(0, 2)) / (count_per_step.clamp(min=1) * dims),
            "count": count,
            "count_per_step": count_per_step,
        }

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
    def predict_action_chunk(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             action_mask: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized action chunks [B, K, D] (float32) in one forward pass: no KV cache, no decoding loop.

        Inputs as :meth:`VLAProcessor.inference_batch` makes them for a chunk head: uint8 images
        ([B, 3, H, W] or [B, V, 3, H, W]), right-padded ``[BOS] prompt [space] placeholders`` ids, their
        mask and ``action_mask``; ``proprio`` [B, P] normalized, for models with a proprio token.
        """
        if self.config.action_head == "tokens":
            raise ValueError("predict_action_chunk needs a chunk head; this VLA's action_head is 'tokens' "
                             "(use generate_action_tokens)")
        device = next(self.parameters()).device
        proprio = proprio.to(device) if proprio is not None else None
        hidden = self._placeholder_states(pixel_values.to(device), input_ids.to(device), attention_mask.to(device),
                                          action_mask.to(device), proprio)
        return self.action_head(hidden).float()

    @torch.inference_mode()
    def generate_action_tokens(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                               action_dim: int = DEFAULT_ACTION_DIM, *, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding of ``action_dim`` tokens per example with a KV cache ([B, action_dim]).

        Inputs as :meth:`VLAProcessor.inference_batch` makes them: uint8 images and right-padded
        ``[BOS] prompt [space]`` ids with their mask (and ``proprio`` for models with a proprio token).
        """
        if self.config.action_head != "tokens":
            raise ValueError(f"generate_action_tokens needs the 'tokens' head; this VLA's action_head is "
                             f"{self.config.action_head!r} (use predict_action_chunk)")
        device = next(self.parameters()).device
        pixel_values, input_ids, attention_mask = pixel_values.to(device), input_ids.to(device), attention_mask.to(device)
        proprio = proprio.to(device) if proprio is not None else None
        embeds, mask, _ = self.embed_multimodal(pixel_values, input_ids, attention_mask, proprio=proprio)
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


def _insert_prefix(values: torch.Tensor, length: int, fill: int | bool) -> torch.Tensor:
    """``values`` [B, L] with ``length`` copies of ``fill`` inserted after the first (BOS) position."""
    prefix = values.new_full((values.shape[0], length), fill)
    return torch.cat([values[:, :1], prefix, values[:, 1:]], dim=1)


def _instruction_embedding(text: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None,
                           action_mask: torch.Tensor | None) -> torch.Tensor:
    """FiLM's conditioning: the mean input embedding of the language positions ([B, H]).

    Those are every unpadded position before the first labelled one (so training sequences, whose
    action tokens follow the prompt, average exactly what inference prompts do) that is no placeholder:
    for the ``l1`` head that includes the stop token after the placeholders, as OpenVLA-OFT averages.
    """
    keep = attention_mask.bool()
    if labels is not None:
        keep = keep & ((labels != IGNORE_INDEX).cumsum(dim=1) == 0)
    if action_mask is not None:
        keep = keep & ~action_mask.bool()
    weights = keep[..., None].to(text.dtype)
    return (text * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _right_to_left_padding(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll each row so its padding (mask == 0, at the end) moves to the start."""
    lengths = mask.sum(dim=1)
    total = mask.shape[1]
    index = (torch.arange(total, device=mask.device)[None] - (total - lengths)[:, None]) % total
    embeds = torch.gather(embeds, 1, index[..., None].expand_as(embeds))
    mask = torch.gather(mask, 1, index)
    return embeds, mask
