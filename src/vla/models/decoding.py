"""Greedy action-token decoding with a preallocated KV cache and a compiled decode step.

At 7B on an H200, :meth:`VLA.generate_action_tokens` is launch-bound: each of the 6 decode steps costs
~20-28 ms of host work (32 layers of small kernels, a mask and ``DynamicCache`` bookkeeping per step)
against ~5 ms of GPU kernels (docs/benchmarks.md, "GPU check"). With a ``StaticCache`` every decode step
has the same shapes and no attention mask (the causal mask follows from the positions), so
``torch.compile(mode="reduce-overhead")`` captures the step once as a CUDA graph and replays it.
The first call per batch size and cache bucket compiles (~35 s at 7B); later calls replay. Outputs are
the same computation; in bf16 the kernels differ, so logits can differ in the last bits (ties in the
argmax could then pick another bin). Rows with padding (prompts of different lengths in one batch) take
the model's own decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import StaticCache

from vla.models.vla import VLA

CACHE_BUCKET = 64  # cache lengths rounded up to this, so prompts of similar length share one graph


class StaticCacheDecoder:
    """``generate(...)`` as :meth:`VLA.generate_action_tokens`, with a reused static cache per shape.

    ``compile_mode``: a ``torch.compile`` mode for the decode step (``"reduce-overhead"``: CUDA graphs),
    or None to run it eagerly (same numbers as compiled on CPU; what tests use).
    """

    def __init__(self, vla: VLA, compile_mode: str | None = "reduce-overhead"):
        if vla.config.action_head != "tokens":
            raise ValueError(f"StaticCacheDecoder decodes action tokens; this VLA's action_head is {vla.config.action_head!r}")
        self.vla = vla
        self.llm = vla.llm_backbone.llm
        self.caches: dict[tuple[int, int], StaticCache] = {}
        self.step: Callable[[torch.Tensor, torch.Tensor, StaticCache], torch.Tensor] = (
            self._step if compile_mode is None else torch.compile(self._step, mode=compile_mode, dynamic=False))

    def _step(self, embeds: torch.Tensor, positions: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        return self.llm(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True).logits[:, -1]

    def _cache(self, batch: int, length: int) -> StaticCache:
        size = -(-length // CACHE_BUCKET) * CACHE_BUCKET
        if (batch, size) not in self.caches:
            self.caches[(batch, size)] = StaticCache(config=self.llm.config, max_cache_len=size)
        cache = self.caches[(batch, size)]
        cache.reset()
        return cache

    @torch.inference_mode()
    def generate(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 action_dim: int, *, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """[B, action_dim] greedy action tokens; inputs as :meth:`VLA.generate_action_tokens` takes them."""
        if not bool(attention_mask.bool().all()):
            return self.vla.generate_action_tokens(pixel_values, input_ids, attention_mask, action_dim, proprio=proprio)
        device = next(self.vla.parameters()).device
        proprio = proprio.to(device) if proprio is not None else None
        embeds, _, _ = self.vla.embed_multimodal(pixel_values.to(device), input_ids.to(device),
                                                 attention_mask.to(device), proprio=proprio)
        batch, length = embeds.shape[:2]
        cache = self._cache(batch, length + action_dim)
        positions = torch.arange(length, device=device)[None].expand(batch, -1)
        logits = self.llm(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True,
                          logits_to_keep=1).logits[:, -1]
        tokens = [logits.argmax(dim=-1)]
        for step in range(1, action_dim):
            position = torch.full((batch, 1), length + step - 1, device=device)
            logits = self.step(self.vla.llm_backbone.embed(tokens[-1][:, None]), position, cache)
            tokens.append(logits.argmax(dim=-1))
        return torch.stack(tokens, dim=1)
