"""Vision backbones (timm ViTs) with a small registry, and their image preprocessing.

Each backbone returns *patch* features from the second-to-last transformer block (prefix tokens
removed), as Prismatic/OpenVLA do. The fused ``dinosiglip`` backbone runs DINOv2 and SigLIP on the
same image (each with its own mean/std) and concatenates their features per patch.
With FiLM (:meth:`VisionBackbone.add_film`, OpenVLA-OFT+) every block of every featurizer is also
conditioned on the instruction; the feature layer stays the same.
``tiny-*`` variants use the same timm architectures with a few small blocks, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch
from torch import nn

from vla.contract.image_transform import ImageTransform
from vla.models.film import film_patches, wrap_vit_blocks

# timm ids exactly as Prismatic's prismatic/models/backbones/vision/*.py name them.
DINOV2_L = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_SO400M = "vit_so400m_patch14_siglip_224"
SIGLIP_SO400M_384 = "vit_so400m_patch14_siglip_384"
SIGLIP_B16_224 = "vit_base_patch16_siglip_224"
SIGLIP_B16_256 = "vit_base_patch16_siglip_256"
SIGLIP_B16_384 = "vit_base_patch16_siglip_384"
IN1K_L = "vit_large_patch16_224.augreg_in21k_ft_in1k"
CLIP_B = "vit_base_patch16_clip_224.openai"
CLIP_L = "vit_large_patch14_clip_224.openai"
CLIP_L_336 = "vit_large_patch14_clip_336.openai"
_TINY = {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_ratio": 2.0}
# Prismatic's CLIPViTBackbone builds OpenAI CLIP towers with act_layer="quick_gelu" (they were trained
# with it; timm defaults to exact GELU). Its fused DinoCLIP backbone does *not* pass the override.
_QUICK_GELU = "quick_gelu"


@dataclass(frozen=True)
class VisionSpec:
    """Which timm models make up a backbone (fused backbones list two)."""

    timm_ids: tuple[str, ...]
    image_size: int = 224
    overrides: dict = field(default_factory=dict)  # architecture kwargs (tiny variants)
    # one entry per timm id: Prismatic's `timm_override_act_layer` (None: timm's default activation)
    act_layers: tuple[str | None, ...] | None = None

    def act_layer(self, index: int) -> str | None:
        return None if self.act_layers is None else self.act_layers[index]


def _clip(timm_id: str, image_size: int = 224, **kw) -> VisionSpec:
    return VisionSpec((timm_id,), image_size=image_size, act_layers=(_QUICK_GELU,), **kw)


_REAL_BACKBONES: dict[str, VisionSpec] = {
    # name: Prismatic id (prismatic/models/materialize.py VISION_BACKBONES)
    "dinov2-224px": VisionSpec((DINOV2_L,)),  # dinov2-vit-l
    "siglip-224px": VisionSpec((SIGLIP_SO400M,)),  # siglip-vit-so400m
    "in1k-224px": VisionSpec((IN1K_L,)),  # in1k-vit-l
    "dinosiglip-224px": VisionSpec((DINOV2_L, SIGLIP_SO400M)),  # dinosiglip-vit-so-224px
    "clip-224px": _clip(CLIP_L),  # clip-vit-l
    "clip-b-224px": _clip(CLIP_B),  # clip-vit-b
    "clip-336px": _clip(CLIP_L_336, 336),  # clip-vit-l-336px
    "siglip-b16-224px": VisionSpec((SIGLIP_B16_224,)),  # siglip-vit-b16-224px
    "siglip-b16-256px": VisionSpec((SIGLIP_B16_256,), image_size=256),  # siglip-vit-b16-256px
    "siglip-b16-384px": VisionSpec((SIGLIP_B16_384,), image_size=384),  # siglip-vit-b16-384px
    "siglip-384px": VisionSpec((SIGLIP_SO400M_384,), image_size=384),  # siglip-vit-so400m-384px
    "dinoclip-336px": VisionSpec((DINOV2_L, CLIP_L_336), image_size=336),  # dinoclip-vit-l-336px
    "dinosiglip-384px": VisionSpec((DINOV2_L, SIGLIP_SO400M_384), image_size=384),  # dinosiglip-vit-so-384px
}
_TINY_BACKBONES: dict[str, VisionSpec] = {
    "tiny-dinov2-224px": VisionSpec((DINOV2_L,), overrides=_TINY),
    "tiny-siglip-224px": VisionSpec((SIGLIP_SO400M,), overrides=_TINY),
    "tiny-in1k-224px": VisionSpec((IN1K_L,), overrides=_TINY),
    "tiny-dinosiglip-224px": VisionSpec((DINOV2_L, SIGLIP_SO400M), overrides=_TINY),
    # 64 instead of 256 patches: ~2.4x faster CPU training steps for recipe searches on the sim.
    "tiny-dinosiglip-112px": VisionSpec((DINOV2_L, SIGLIP_SO400M), image_size=112, overrides=_TINY),
    "tiny-clip-224px": _clip(CLIP_L, overrides=_TINY),
    "tiny-clip-336px": _clip(CLIP_L_336, 336, overrides=_TINY),
    "tiny-siglip-384px": VisionSpec((SIGLIP_SO400M_384,), image_size=384, overrides=_TINY),
    "tiny-dinoclip-336px": VisionSpec((DINOV2_L, CLIP_L_336), image_size=336, overrides=_TINY),
    "tiny-dinosiglip-384px": VisionSpec((DINOV2_L, SIGLIP_SO400M_384), image_size=384, overrides=_TINY),
}
VISION_BACKBONES: dict[str, VisionSpec] = {**_REAL_BACKBONES, **_TINY_BACKBONES}
_AFTER_BLOCKS = {"norm", "fc_norm", "attn_pool", "head", "head_drop"}  # timm ViT modules after the blocks


def get_vision_spec(name: str) -> VisionSpec:
    if name not in VISION_BACKBONES:
        raise ValueError(f"Unknown vision backbone {name!r}; registered: {sorted(VISION_BACKBONES)}")
    return VISION_BACKBONES[name]


class VisionBackbone(nn.Module):
    """One or two timm ViTs returning per-patch features of shape [B, num_patches, embed_dim].

    Parameter names follow OpenVLA's HF layout: ``featurizer`` and, for fused backbones,
    ``fused_featurizer``.
    """

    def __init__(self, name: str, pretrained: bool = False, resize_strategy: str = "resize-naive"):
        super().__init__()
        spec = get_vision_spec(name)
        self.name = name
        self.image_size = spec.image_size
        models = [_create_vit(timm_id, pretrained, spec, spec.act_layer(i)) for i, timm_id in enumerate(spec.timm_ids)]
        self.featurizer = models[0]
        self.fused_featurizer = models[1] if len(models) > 1 else None
        self.embed_dim = sum(m.embed_dim for m in models)
        self.film = False
        self.num_patches = models[0].patch_embed.num_patches
        configs = [timm.data.resolve_model_data_config(m) for m in models]
        geometry = {(c["interpolation"], _prismatic_crop_pct(t, c)) for t, c in zip(spec.timm_ids, configs)}
        if len(geometry) != 1:  # one uint8 image feeds every view
            raise ValueError(f"{name}: views disagree on (interpolation, crop_pct): {sorted(geometry)}")
        ((interpolation, crop_pct),) = geometry
        with torch.device("cpu"):  # preprocessing stays on CPU when the weights are built on meta (checkpoint import)
            self.image_transform = ImageTransform(
                spec.image_size, [c["mean"] for c in configs], [c["std"] for c in configs], resize_strategy,
                interpolation=interpolation, crop_pct=crop_pct,
            )

    @property
    def featurizers(self) -> list[nn.Module]:
        return [m for m in (self.featurizer, self.fused_featurizer) if m is not None]

    def add_film(self, llm_dim: int) -> None:
        """FiLM every featurizer's blocks with the instruction (``llm_dim``-wide average embedding)."""
        if self.film:
            raise ValueError(f"{self.name} already has FiLM")
        for vit in self.featurizers:
            wrap_vit_blocks(vit, llm_dim)
        self.film = True

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters that never get gradients: everything after the second-to-last block.

        They stay in the module (OpenVLA's checkpoints carry them) but must not be marked
        trainable, or DDP waits for gradients that never come.
        """
        unused = []
        for vit in self.featurizers:
            for name, param in vit.named_parameters():
                in_block = name.startswith("blocks.")
                if (in_block and int(name.split(".")[1]) == len(vit.blocks) - 1) or (not in_block and name.split(".")[0] in _AFTER_BLOCKS):
                    unused.append(param)
        return unused

    def forward(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """``pixel_values``: uint8 [B, 3, S, S] from :class:`ImageTransform` (normalized here).

        ``language`` [B, llm_dim]: the average instruction embedding, required with FiLM and only then.
        """
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or pixel_values.dtype != torch.uint8:
            raise ValueError(f"{self.name} expects uint8 pixel_values [B, 3, H, W], got {pixel_values.dtype} {tuple(pixel_values.shape)}")
        if self.film and language is None:
            raise ValueError(f"{self.name} has FiLM: its forward needs the instruction embedding (language)")
        if not self.film and language is not None:
            raise ValueError(f"{self.name} has no FiLM: language must be None")
        dtype = next(self.featurizer.parameters()).dtype
        views = torch.split(self.image_transform.normalize(pixel_values).to(dtype), 3, dim=1)
        if self.film:
            language = language.to(dtype)
            features = [film_patches(m, v, language, len(m.blocks) - 2) for m, v in zip(self.featurizers, views)]
        else:
            features = [_second_to_last_patches(m, v) for m, v in zip(self.featurizers, views)]
        return torch.cat(features, dim=2)


def _second_to_last_patches(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch features after the second-to-last block; the last block is never run (Prismatic's
    ``get_intermediate_layers`` runs it and discards it: ~4% of a DinoSigLIP forward)."""
    (patches,) = vit.forward_intermediates(images, indices=[len(vit.blocks) - 2], stop_early=True,
                                           output_fmt="NLC", intermediates_only=True)
    return patches


def _prismatic_crop_pct(timm_id: str, data_config: dict) -> float:
    """timm's eval ``crop_pct``, except that Prismatic resizes SigLIP and IN1K straight to the image size
    (its "Fix" in base_vision.py / dinosiglip_vit.py) instead of to ``size / crop_pct``."""
    if "siglip" in timm_id or "in1k" in timm_id:
        return 1.0
    return float(data_config.get("crop_pct") or 1.0)


def _create_vit(timm_id: str, pretrained: bool, spec: VisionSpec, act_layer: str | None = None) -> nn.Module:
    kwargs = dict(num_classes=0, img_size=spec.image_size, **spec.overrides)
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    if not pretrained:
        return timm.create_model(timm_id, pretrained=False, **kwargs)
    try:
        return timm.create_model(timm_id, pretrained=True, **kwargs)
    except Exception as err:  # network, cache or hub errors all mean the same thing to the user
        raise RuntimeError(
            f"Could not load pretrained weights for timm model {timm_id!r} (HF hub repo 'timm/{timm_id}'). "
            "Put them in the Hugging Face cache (HF_HOME) or set `pretrained: false` to start from random weights."
        ) from err
