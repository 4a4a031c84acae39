"""FiLM (OpenVLA-OFT+): the instruction modulates every ViT block of the vision backbone.

Each timm block is wrapped in :class:`FiLMedVisionTransformerBlock`, which projects the average
instruction embedding (LLM input space) to a per-channel ``gamma``/``beta`` and applies
``x * (1 + gamma) + beta`` between the block's attention and MLP halves, as OFT's
``prismatic/models/film_vit_wrapper.py`` does. Names follow OFT's (``blocks.N.block.*`` for the wrapped
block, ``blocks.N.scale`` / ``blocks.N.shift``), so its FiLM checkpoints map onto ours directly.
With ``gamma = beta = 0`` a FiLMed ViT computes exactly what the plain one does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class FiLMedVisionTransformerBlock(nn.Module):
    """A timm ViT block whose features are scaled and shifted by the instruction."""

    def __init__(self, block: nn.Module, vision_dim: int, llm_dim: int):
        super().__init__()
        self.block = block
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        """``x`` [N, T, vision_dim]; ``language`` [N, llm_dim] (the average instruction embedding)."""
        language = language.to(self.scale.weight.dtype)
        gamma = self.scale(language)[:, None]
        beta = self.shift(language)[:, None]
        block = self.block
        x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
        x = x * (1 + gamma) + beta
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def wrap_vit_blocks(vit: nn.Module, llm_dim: int) -> None:
    """Wrap every block of a timm ViT in place (new ``scale``/``shift`` linears, OFT's default init)."""
    if any(isinstance(block, FiLMedVisionTransformerBlock) for block in vit.blocks):
        raise ValueError("this ViT already has FiLM")
    vit.blocks = nn.Sequential(*(FiLMedVisionTransformerBlock(block, vit.embed_dim, llm_dim) for block in vit.blocks))


def film_patches(vit: nn.Module, images: torch.Tensor, language: torch.Tensor, block_index: int) -> torch.Tensor:
    """Patch features (prefix tokens removed) after block ``block_index`` of a FiLMed ViT.

    The same steps as timm's ``forward_intermediates`` up to that block (later blocks are not run), with
    each block also given ``language``; honours timm's ``set_grad_checkpointing``.
    """
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    recompute = vit.grad_checkpointing and torch.is_grad_enabled()
    for block in vit.blocks[: block_index + 1]:
        x = checkpoint(block, x, language, use_reentrant=False) if recompute else block(x, language)
    return x[:, vit.num_prefix_tokens:]
