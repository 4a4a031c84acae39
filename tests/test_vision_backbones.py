"""Vision registry (Prismatic's 13 backbones + tiny variants) and the resize-crop image transform."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vla.contract.image_transform import RESIZE_STRATEGIES, ImageTransform
from vla.models.openvla_format import OPENVLA_VISION_IDS, PRISMATIC_BASE_VLMS
from vla.models.summary import parameter_counts
from vla.models.vision import VISION_BACKBONES, VisionBackbone, get_vision_spec

# Prismatic id -> (our name, timm ids, image size, patches, embed dim, vision params in millions)
# Params: timm towers without classifier head (num_classes=0); the published sizes are ViT-L ~304M,
# SigLIP SO400M ~428M (with its MAP pooling head), ViT-B/16 ~86M (+~7M MAP head for SigLIP).
PRISMATIC_BACKBONES = {
    "dinov2-vit-l": ("dinov2-224px", ("vit_large_patch14_reg4_dinov2.lvd142m",), 224, 256, 1024, 303.2),
    "siglip-vit-so400m": ("siglip-224px", ("vit_so400m_patch14_siglip_224",), 224, 256, 1152, 427.7),
    "in1k-vit-l": ("in1k-224px", ("vit_large_patch16_224.augreg_in21k_ft_in1k",), 224, 196, 1024, 303.3),
    "clip-vit-l": ("clip-224px", ("vit_large_patch14_clip_224.openai",), 224, 256, 1024, 303.2),
    "clip-vit-b": ("clip-b-224px", ("vit_base_patch16_clip_224.openai",), 224, 196, 768, 85.8),
    "clip-vit-l-336px": ("clip-336px", ("vit_large_patch14_clip_336.openai",), 336, 576, 1024, 303.5),
    "siglip-vit-b16-224px": ("siglip-b16-224px", ("vit_base_patch16_siglip_224",), 224, 196, 768, 92.9),
    "siglip-vit-b16-256px": ("siglip-b16-256px", ("vit_base_patch16_siglip_256",), 256, 256, 768, 92.9),
    "siglip-vit-b16-384px": ("siglip-b16-384px", ("vit_base_patch16_siglip_384",), 384, 576, 768, 93.2),
    "siglip-vit-so400m-384px": ("siglip-384px", ("vit_so400m_patch14_siglip_384",), 384, 729, 1152, 428.2),
    "dinosiglip-vit-so-224px": ("dinosiglip-224px", ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"),
                                224, 256, 2176, 730.9),
    "dinosiglip-vit-so-384px": ("dinosiglip-384px", ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"),
                                384, 729, 2176, 731.9),
    "dinoclip-vit-l-336px": ("dinoclip-336px", ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_large_patch14_clip_336.openai"),
                             336, 576, 2048, 607.1),
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _meta_backbone(name: str) -> VisionBackbone:
    with torch.device("meta"):
        return VisionBackbone(name)


def _first_act(vit: torch.nn.Module) -> str:
    return type(vit.blocks[0].mlp.act).__name__


def test_registry_covers_prismatic_13():
    assert len(PRISMATIC_BACKBONES) == 13
    assert {v[0] for v in PRISMATIC_BACKBONES.values()} == {n for n in VISION_BACKBONES if not n.startswith("tiny-")}
    for prismatic_id, (name, timm_ids, size, *_rest) in PRISMATIC_BACKBONES.items():
        assert OPENVLA_VISION_IDS[prismatic_id] == name
        spec = get_vision_spec(name)
        assert spec.timm_ids == timm_ids and spec.image_size == size and not spec.overrides
    # every tiny variant shadows a real backbone's timm models and size
    for name, spec in VISION_BACKBONES.items():
        if name.startswith("tiny-"):
            assert spec.overrides
            if name.removeprefix("tiny-") in VISION_BACKBONES:
                real = VISION_BACKBONES[name.removeprefix("tiny-")]
                assert (real.timm_ids, real.image_size, real.act_layers) == (spec.timm_ids, spec.image_size, spec.act_layers)


@pytest.mark.parametrize("name", sorted(VISION_BACKBONES))
def test_every_entry_builds_on_meta(name):
    spec = get_vision_spec(name)
    vb = _meta_backbone(name)
    patch = vb.featurizer.patch_embed.patch_size[0]
    assert vb.num_patches == (spec.image_size // patch) ** 2
    assert vb.image_size == vb.image_transform.image_size == spec.image_size
    assert vb.image_transform.n_views == len(spec.timm_ids) == len(vb.featurizers)
    if not name.startswith("tiny-"):
        _, _, _, patches, dim, _ = next(v for v in PRISMATIC_BACKBONES.values() if v[0] == name)
        assert (vb.num_patches, vb.embed_dim) == (patches, dim)


@pytest.mark.parametrize("prismatic_id", sorted(PRISMATIC_BACKBONES))
def test_parameter_counts_match_known_sizes(prismatic_id):
    name, *_, millions = PRISMATIC_BACKBONES[prismatic_id]
    vision = parameter_counts(name, "tiny-llama", "gelu-mlp")["vision"]
    assert vision / 1e6 == pytest.approx(millions, abs=0.1)


def test_clip_towers_use_quick_gelu_and_clip_stats():
    for name in ("clip-224px", "clip-b-224px", "clip-336px", "tiny-clip-224px"):
        vb = _meta_backbone(name)
        assert _first_act(vb.featurizer) == "QuickGELU"
        assert vb.image_transform.mean.flatten().tolist() == pytest.approx(CLIP_MEAN)
        assert vb.image_transform.std.flatten().tolist() == pytest.approx(CLIP_STD)
    # Prismatic's DinoCLIP builds its CLIP tower without the override (timm's GELU); views keep own stats
    vb = _meta_backbone("dinoclip-336px")
    assert [_first_act(m) for m in vb.featurizers] == ["GELU", "GELU"]
    assert vb.image_transform.mean.flatten().tolist()[3:] == pytest.approx(CLIP_MEAN)
    assert _first_act(_meta_backbone("siglip-384px").featurizer) != "QuickGELU"


@pytest.mark.parametrize("name", sorted(n for n in VISION_BACKBONES if n.startswith("tiny-")))
def test_tiny_forward(name):
    torch.manual_seed(0)
    vb = VisionBackbone(name).eval()
    image = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    pixels = vb.image_transform(image).unsqueeze(0)
    assert pixels.shape == (1, 3, vb.image_size, vb.image_size) and pixels.dtype == torch.uint8
    with torch.no_grad():
        out = vb(pixels)
    assert out.shape == (1, vb.num_patches, vb.embed_dim)
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- resize-crop
def _reference_resize_crop(image: np.ndarray, size: int, scale: int | None = None) -> np.ndarray:
    """Short side -> ``scale`` (default S) with bicubic, long side truncated, then center crop S x S."""
    scale = scale or size
    pil = Image.fromarray(image)
    w, h = pil.size
    if w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    return np.asarray(pil.crop((left, top, left + size, top + size)))


SHAPES = [(480, 640), (640, 480), (224, 224), (100, 333), (257, 91), (336, 337), (50, 50)]


@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("size", [224, 336, 384])
def test_resize_crop_matches_reference(hw, size):
    assert "resize-crop" in RESIZE_STRATEGIES
    image = np.random.default_rng(sum(hw) + size).integers(0, 256, (*hw, 3), dtype=np.uint8)
    transform = ImageTransform(size, [(0.5,) * 3], [(0.5,) * 3], "resize-crop")
    out = transform(image)
    assert out.shape == (3, size, size) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), _reference_resize_crop(image, size))


def test_resize_crop_with_crop_pct():
    image = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    transform = ImageTransform(224, [(0.5,) * 3], [(0.5,) * 3], "resize-crop", crop_pct=0.9)
    assert transform.scale_size == math.floor(224 / 0.9) == 248
    np.testing.assert_array_equal(transform(image).permute(1, 2, 0).numpy(), _reference_resize_crop(image, 224, 248))


def test_letterbox_and_naive_unchanged():
    image = np.random.default_rng(2).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    naive = ImageTransform(224, [(0.5,) * 3], [(0.5,) * 3], "resize-naive")
    expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(naive(image).permute(1, 2, 0).numpy(), expected)
    letterbox = ImageTransform(224, [(0.5,) * 3], [(0.5,) * 3], "letterbox")
    canvas = Image.new("RGB", (200, 200), (127, 127, 127))
    canvas.paste(Image.fromarray(image), (0, 40))
    expected = np.asarray(canvas.resize((224, 224), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(letterbox(image).permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("name", ["clip-224px", "clip-b-224px", "clip-336px", "siglip-384px", "in1k-224px",
                                  "dinov2-224px", "dinoclip-336px", "dinosiglip-384px"])
def test_resize_crop_matches_prismatic_timm_pipeline(name):
    """Prismatic's resize-crop = timm's eval transform at the backbone size (SigLIP/IN1K: Resize(S) fix)."""
    transforms = pytest.importorskip("torchvision.transforms")
    vb = _meta_backbone(name)
    vit = vb.featurizer if "dinosiglip" not in name and "dinoclip" not in name else vb.fused_featurizer
    timm_id = get_vision_spec(name).timm_ids[-1]
    cfg = timm.data.resolve_model_data_config(vit)
    cfg["input_size"] = (3, vb.image_size, vb.image_size)
    tfm = timm.data.create_transform(**cfg, is_training=False)
    resize, crop = tfm.transforms[:2]
    assert isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)
    if "siglip" in timm_id or "in1k" in timm_id:
        resize = transforms.Resize(vb.image_size, interpolation=resize.interpolation)
    with torch.device("meta"):
        ours = VisionBackbone(name, resize_strategy="resize-crop").image_transform
    for hw in SHAPES:
        image = np.random.default_rng(hw[0]).integers(0, 256, (*hw, 3), dtype=np.uint8)
        expected = np.asarray(crop(resize(Image.fromarray(image))))
        np.testing.assert_array_equal(ours(image).permute(1, 2, 0).numpy(), expected)


# ----------------------------------------------------------------------------- OpenVLA/Prismatic ids
def test_base_vlms_resolve_to_registry():
    from vla.models.openvla_format import OPENVLA_LLM_IDS

    for base_vlm, (vision_id, llm_id, arch, resize) in PRISMATIC_BASE_VLMS.items():
        assert OPENVLA_VISION_IDS[vision_id] in VISION_BACKBONES, base_vlm
        assert llm_id in OPENVLA_LLM_IDS and resize in RESIZE_STRATEGIES, base_vlm
        fused = len(get_vision_spec(OPENVLA_VISION_IDS[vision_id]).timm_ids) == 2
        assert arch.split("+")[-1] == ("fused-gelu-mlp" if fused else "gelu-mlp"), base_vlm
    assert PRISMATIC_BASE_VLMS["prism-dinosiglip+7b"][0] == "dinosiglip-vit-so-384px"
    assert PRISMATIC_BASE_VLMS["reproduction-llava-v15+7b"] == ("clip-vit-l-336px", "vicuna-v15-7b", "gelu-mlp", "letterbox")
