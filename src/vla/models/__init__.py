"""Model core: vision backbones, projectors, LLM backbones, action heads, the VLA, and how it is built, saved and loaded."""

from vla.models.checkpoints import load_checkpoint, load_training_checkpoint
from vla.models.config import IMAGE_VIEWS, VLAConfig
from vla.models.factory import build_vla
from vla.models.heads import ACTION_HEADS
from vla.models.io import load_vla, save_vla
from vla.models.llm import LLM_BACKBONES, LLMBackbone
from vla.models.oft_format import export_oft, load_oft
from vla.models.openvla_format import export_openvla_hf, load_openvla
from vla.models.projectors import PROJECTORS, build_projector
from vla.models.vision import VISION_BACKBONES, VisionBackbone
from vla.models.vla import VLA, ChunkOutput

__all__ = [
    "ACTION_HEADS", "ChunkOutput", "IMAGE_VIEWS", "LLMBackbone", "LLM_BACKBONES", "PROJECTORS", "VISION_BACKBONES", "VLA",
    "VLAConfig", "VisionBackbone", "build_projector", "build_vla", "export_oft", "export_openvla_hf", "load_checkpoint",
    "load_oft", "load_openvla",
    "load_training_checkpoint", "load_vla", "save_vla",
]
