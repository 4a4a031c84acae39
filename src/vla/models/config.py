"""What a VLA is built from: backbone names, projector, image resizing, action bins, attention kernel.

The model carries its :class:`VLAConfig` (``vla.config``), so any VLA can be saved and rebuilt.
Saved configs (``vla_config.json``, the ``.ckpt`` ``["vla"]["config"]`` entry, the ``vla_config``
entry of an exported OpenVLA ``config.json``) hold :data:`SAVED_FIELDS` only: the ``pretrained_*``
flags say where *initial* weights come from, and saved weights replace those.

``attn_implementation: auto`` picks the attention kernel when the LLM is built
(:func:`vla.models.llm.resolve_attn_implementation`): FlashAttention-2 where the ``flash_attn`` package imports and CUDA
is available, else SDPA (numerically the same model). Saved configs record the *request* (``auto``), not
the kernel picked, so a model exported on a GPU machine loads on a CPU one and vice versa.

Action-chunk fields (docs/action-chunks.md: ``action_head``, ``chunk_size``, ``action_dim``, ``image_views``,
``proprio_dim``, ``film``) are saved only where they differ from their defaults: an OpenVLA-style model's
saved config stays exactly what it was before they existed, and older files load with the defaults.
The ``l1`` head needs a custom 4-D attention mask, which only the ``sdpa`` and ``eager`` kernels take, so
``auto`` means ``sdpa`` for it.

``llm_architecture`` records an LLM that is not the registry's architecture for ``llm_backbone``: imported
checkpoints are built from their own config (openvla-7b's Llama has ``rms_norm_eps`` 1e-6, derived checkpoints
carry smaller Llamas), and saving that keeps every later rebuild (``load_vla``, ``.ckpt`` resume/export) the
same model. It holds ``model_type`` and the fields that differ from that type's defaults; None (the registry's)
is not saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vla.contract.image_transform import RESIZE_STRATEGIES
from vla.models.heads import ACTION_HEADS
from vla.models.llm import ATTN_IMPLEMENTATIONS, LLM_BACKBONES
from vla.models.projectors import PROJECTORS
from vla.models.vision import VISION_BACKBONES

CHUNK_FIELDS = ("action_head", "chunk_size", "action_dim", "image_views", "proprio_dim", "film")
SAVED_FIELDS = ("vision_backbone", "llm_backbone", "projector", "image_resize_strategy", "n_action_bins", "model_id",
                "attn_implementation", *CHUNK_FIELDS, "llm_architecture")
REQUIRED_FIELDS = ("vision_backbone", "llm_backbone")
IMAGE_VIEWS = ("primary", "secondary", "wrist")  # the camera views prepared shards carry
MASKED_ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager")  # kernels taking the l1 head's 4-D mask (auto: sdpa)


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
    action_head: str = "tokens"  # vla.models.heads.ACTION_HEADS
    chunk_size: int = 1  # K actions per prediction (tokens: 1)
    action_dim: int | None = None  # D (l1 needs it; build_vla fills it from norm_stats)
    image_views: tuple[str, ...] = ("primary",)  # camera views, in sequence order
    proprio_dim: int = 0  # 0: no proprio token
    film: bool = False  # FiLM the vision backbone's blocks with the instruction
    # the LLM's HF config fields where they are not the registry's (imported checkpoints); None: the registry's
    llm_architecture: Mapping[str, Any] | None = field(default=None, hash=False)
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
        if self.llm_architecture is not None:
            if not isinstance(self.llm_architecture, Mapping) or not isinstance(self.llm_architecture.get("model_type"), str):
                raise ValueError("llm_architecture in the VLA config must be a mapping of LLM config fields with a "
                                 f"model_type, or null; got {self.llm_architecture!r}")
            object.__setattr__(self, "llm_architecture", dict(self.llm_architecture))
        self._check_chunk_fields()

    def _check_chunk_fields(self) -> None:
        _check_choice("action_head", self.action_head, sorted(ACTION_HEADS))
        head = ACTION_HEADS[self.action_head]
        if not _is_int(self.chunk_size) or self.chunk_size < 1:
            raise ValueError(f"chunk_size in the VLA config must be an integer >= 1, got {self.chunk_size!r}")
        if not head.chunked and self.chunk_size != 1:
            raise ValueError(f"chunk_size {self.chunk_size} needs a chunked action_head "
                             f"({[k for k, h in ACTION_HEADS.items() if h.chunked]}); action_head "
                             f"{self.action_head!r} predicts one step (chunk_size 1)")
        if self.action_dim is not None and (not _is_int(self.action_dim) or self.action_dim < 1):
            raise ValueError(f"action_dim in the VLA config must be an integer >= 1 or null, got {self.action_dim!r}")
        if head.needs_action_dim and self.action_dim is None:
            raise ValueError(f"action_head {self.action_head!r} needs action_dim (build_vla fills it from norm_stats)")
        views = self.image_views
        if isinstance(views, str) or not isinstance(views, Sequence) or not views:
            raise ValueError(f"image_views in the VLA config must be a non-empty list of view names from "
                             f"{list(IMAGE_VIEWS)}, got {views!r}")
        for view in views:
            _check_choice("image view", view, IMAGE_VIEWS)
        duplicates = sorted({v for v in views if list(views).count(v) > 1})
        if duplicates:
            raise ValueError(f"image_views in the VLA config repeat {duplicates}: {list(views)}")
        object.__setattr__(self, "image_views", tuple(views))
        if not _is_int(self.proprio_dim) or self.proprio_dim < 0:
            raise ValueError(f"proprio_dim in the VLA config must be an integer >= 0, got {self.proprio_dim!r}")
        if not isinstance(self.film, bool):
            raise ValueError(f"film in the VLA config must be true or false, got {self.film!r}")
        if self.action_head == "l1" and self.attn_implementation not in MASKED_ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} cannot take the l1 head's 4-D attention "
                             f"mask; choose one of {list(MASKED_ATTN_IMPLEMENTATIONS)} (auto means sdpa for l1)")

    @property
    def llm_attn_implementation(self) -> str:
        """The kernel request the LLM is built with: ``auto`` means ``sdpa`` for the l1 head (4-D mask)."""
        return "sdpa" if self.action_head == "l1" and self.attn_implementation == "auto" else self.attn_implementation

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able saved form: :data:`SAVED_FIELDS` (no ``pretrained_*`` flags), chunk fields only
        where they differ from the defaults, tuples as lists."""
        defaults = {f.name: f.default for f in fields(self)}
        saved = {k: v for k, v in asdict(self).items() if k in SAVED_FIELDS
                 and not (k in CHUNK_FIELDS and v == defaults[k]) and not (k == "llm_architecture" and v is None)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in saved.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        """A config from its saved form, including files written before this class or its chunk fields
        existed (missing chunk fields take their defaults; ``image_views`` lists become tuples)."""
        unknown = sorted(set(data) - set(SAVED_FIELDS))
        if unknown:
            raise ValueError(f"Unknown VLA config keys {unknown}; saved configs hold only {list(SAVED_FIELDS)}")
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        if missing:
            raise ValueError(f"VLA config lacks required keys {missing}")
        return cls(**data)


def _check_choice(field: str, value: Any, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"Unknown {field} {value!r} in the VLA config; choose one of {list(allowed)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
