"""What a VLA is built from: backbone names, projector, image resizing, action bins, attention kernel.

The model carries its :class:`VLAConfig` (``vla.config``), so any VLA can be saved and rebuilt.
Saved configs (``vla_config.json``, the ``.ckpt`` ``["vla"]["config"]`` entry, the ``vla_config``
entry of an exported OpenVLA ``config.json``) hold :data:`SAVED_FIELDS` only: the ``pretrained_*``
flags say where *initial* weights come from, and saved weights replace those.

``attn_implementation: auto`` picks the attention kernel when the LLM is built
(:func:`vla.models.llm.resolve_attn_implementation`): FlashAttention-2 where the ``flash_attn`` package imports and CUDA
is available, else SDPA (numerically the same model). Saved configs record the *request* (``auto``), not
the kernel picked, so a model exported on a GPU machine loads on a CPU one and vice versa.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from vla.contract.image_transform import RESIZE_STRATEGIES
from vla.models.llm import ATTN_IMPLEMENTATIONS, LLM_BACKBONES
from vla.models.projectors import PROJECTORS
from vla.models.vision import VISION_BACKBONES

SAVED_FIELDS = ("vision_backbone", "llm_backbone", "projector", "image_resize_strategy", "n_action_bins", "model_id",
                "attn_implementation")
REQUIRED_FIELDS = ("vision_backbone", "llm_backbone")


@dataclass(frozen=True)
class VLAConfig:
    """The architecture of a VLA (frozen: the built modules cannot follow later changes)."""

    vision_backbone: str
    llm_backbone: str
    projector: str = "fused-gelu-mlp"
    image_resize_strategy: str = "resize-naive"
    n_action_bins: int = 256
    model_id: str | None = None  # None: "<vision_backbone>+<llm_backbone>"
    attn_implementation: str = "sdpa"  # or auto: flash_attention_2 when available, else sdpa (saved as auto)
    pretrained_vision: bool = False
    pretrained_llm: bool = False

    def __post_init__(self) -> None:
        _check_choice("vision_backbone", self.vision_backbone, sorted(VISION_BACKBONES))
        _check_choice("llm_backbone", self.llm_backbone, sorted(LLM_BACKBONES))
        _check_choice("projector", self.projector, PROJECTORS)
        _check_choice("image_resize_strategy", self.image_resize_strategy, RESIZE_STRATEGIES)
        _check_choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        if isinstance(self.n_action_bins, bool) or not isinstance(self.n_action_bins, int) or self.n_action_bins < 2:
            raise ValueError(f"n_action_bins in the VLA config must be an integer >= 2, got {self.n_action_bins!r}")
        if self.model_id is not None and (not isinstance(self.model_id, str) or not self.model_id.strip()):
            raise ValueError(f"model_id in the VLA config must be a non-empty string or null, got {self.model_id!r}")
        for flag in ("pretrained_vision", "pretrained_llm"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} in the VLA config must be true or false, got {getattr(self, flag)!r}")
        if self.model_id is None:
            object.__setattr__(self, "model_id", f"{self.vision_backbone}+{self.llm_backbone}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able saved form: :data:`SAVED_FIELDS` (no ``pretrained_*`` flags)."""
        return {k: v for k, v in asdict(self).items() if k in SAVED_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        """A config from its saved form, including files written before this class existed (same keys)."""
        unknown = sorted(set(data) - set(SAVED_FIELDS))
        if unknown:
            raise ValueError(f"Unknown VLA config keys {unknown}; saved configs hold only {list(SAVED_FIELDS)}")
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        if missing:
            raise ValueError(f"VLA config lacks required keys {missing}")
        return cls(**data)


def _check_choice(field: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {field} {value!r} in the VLA config; choose one of {list(allowed)}")
