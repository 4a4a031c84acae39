"""Model core: action tokenizer, vision backbones, projectors, LLM backbones and the VLA."""

from vla.models.action_tokenizer import ActionTokenizer
from vla.models.checkpoints import load_checkpoint
from vla.models.factory import build_vla, load_vla, save_vla
from vla.models.llm import LLM_BACKBONES, LLMBackbone
from vla.models.openvla_format import export_openvla_hf, load_openvla
from vla.models.projectors import PROJECTORS, build_projector
from vla.models.vision import VISION_BACKBONES, ImageTransform, VisionBackbone
from vla.models.vla import VLA

__all__ = [
    "ActionTokenizer", "ImageTransform", "LLMBackbone", "LLM_BACKBONES", "PROJECTORS", "VISION_BACKBONES",
    "VLA", "VisionBackbone", "build_projector", "build_vla", "export_openvla_hf", "load_checkpoint", "load_openvla", "load_vla", "save_vla",
]
