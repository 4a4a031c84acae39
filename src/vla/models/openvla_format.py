"""Import OpenVLA's released checkpoints (HF and Prismatic layouts) and export back to the HF layout.

Two layouts exist in the wild:

* **HF** (``openvla/openvla-7b``, the LIBERO fine-tunes): ``config.json`` (``OpenVLAConfig``),
  ``model*.safetensors`` shards named ``vision_backbone.{featurizer,fused_featurizer}.*``,
  ``projector.fc{1,2,3}.*``, ``language_model.*``, plus tokenizer/preprocessor configs. OpenVLA's
  HF port renames timm's LayerScale ``gamma`` to ``scale_factor`` (HF rewrites names containing
  ``gamma``) and builds its Llama from ``text_config`` over ``LlamaConfig`` defaults
  (``rms_norm_eps=1e-6``), which we reproduce so actions match its code path.
* **Prismatic** training runs: ``checkpoints/*.pt`` holding ``{"model": {"vision_backbone",
  "projector", "llm_backbone"}}`` (``dino_featurizer`` + ``siglip_featurizer``/``clip_featurizer`` for
  fused backbones, else ``featurizer``; ``projector.{0,2,4}`` of an ``nn.Sequential``; ``llm.*``), next
  to the run's ``config.json`` and ``dataset_statistics.json``. Prismatic builds its LLM from the named
  LLM's HF config; we take the registry's, with the sizes the checkpoint's tensors fix (width, MLP width,
  depth, vocabulary, key/value heads) and a ``text_config`` in ``config.json`` over both (a smaller
  LLM than the one named needs it to give ``num_attention_heads``).

Both builds follow the checkpoint, not our registry's size for the named LLM: a smaller Llama (as
derived checkpoints such as MiniVLA-style ones carry) gets a projector sized to its width.

Exports are meant for OpenVLA's own HF code on its pinned versions (transformers 4.40.1, tokenizers
0.19.1, timm 0.9.10): ``tokenizer.json`` is written in the format tokenizers 0.19 reads (merges as
``"a b"`` strings) next to the SentencePiece ``tokenizer.model``; ``auto_map`` names local modules
(``configuration_prismatic.OpenVLAConfig``, as OpenVLA's own repository does), so
``AutoModelForVision2Seq.from_pretrained(dir, trust_remote_code=True)`` works offline once OpenVLA's three
files (``openvla_code``: copied from an OpenVLA checkout) lie next to the weights.

Weights are never held twice: the model skeleton is built on the ``meta`` device (its LLM from the
checkpoint's own config) and each checkpoint tensor is assigned in place (safetensors read per
tensor; ``.pt`` memory-mapped and unpickled with ``weights_only=True``). Buffers no checkpoint holds
(the rotary embedding's ``inv_freq``) are then rebuilt on CPU from the config.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, PreTrainedConfig

from vla.atomic import write_bytes_atomic, write_json_atomic
from vla.models.config import CHUNK_FIELDS, MASKED_ATTN_IMPLEMENTATIONS, VLAConfig
from vla.models.factory import chunk_fields
from vla.models.llm import get_llm_spec, sentencepiece_model_file
from vla.models.quantization import replace_module
from vla.models.vision import VisionSpec, get_vision_spec
from vla.models.vla import VLA

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- id tables
# OpenVLA/Prismatic backbone ids -> our registry names (and back, for export).
OPENVLA_VISION_IDS = {
    "dinosiglip-vit-so-224px": "dinosiglip-224px",
    "siglip-vit-so400m": "siglip-224px",
    "dinov2-vit-l": "dinov2-224px",
    "in1k-vit-l": "in1k-224px",
    "clip-vit-l": "clip-224px",
    "clip-vit-b": "clip-b-224px",
    "clip-vit-l-336px": "clip-336px",
    "siglip-vit-b16-224px": "siglip-b16-224px",
    "siglip-vit-b16-256px": "siglip-b16-256px",
    "siglip-vit-b16-384px": "siglip-b16-384px",
    "siglip-vit-so400m-384px": "siglip-384px",
    "dinoclip-vit-l-336px": "dinoclip-336px",
    "dinosiglip-vit-so-384px": "dinosiglip-384px",
}
OPENVLA_LLM_IDS = {"llama2-7b-pure": "llama2-7b", "vicuna-v15-7b": "vicuna-v15-7b"}
OPENVLA_LLM_HF_PATHS = {"llama2-7b-pure": "meta-llama/Llama-2-7b-hf", "vicuna-v15-7b": "lmsys/vicuna-7b-v1.5"}
# Prismatic `base_vlm` model ids (prismatic/conf/models.py) that our registry can express:
# (vision_backbone_id, llm_backbone_id, arch_specifier, image_resize_strategy).
PRISMATIC_BASE_VLMS = {
    "prism-dinosiglip-224px+7b": ("dinosiglip-vit-so-224px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive"),
    "prism-dinosiglip-224px-controlled+7b": ("dinosiglip-vit-so-224px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive"),
    "dinosiglip-224px-resize-naive+7b": ("dinosiglip-vit-so-224px", "vicuna-v15-7b", "no-align+fused-gelu-mlp", "resize-naive"),
    "siglip-224px+7b": ("siglip-vit-so400m", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox"),
    "dinov2-224px+7b": ("dinov2-vit-l", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox"),
    "in1k-224px+7b": ("in1k-vit-l", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox"),
    "clip-224px+7b": ("clip-vit-l", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox"),
    # LLaVa-v1.5 reproduction and the Section 4.1/4.3/4.4 experiments: CLIP ViT-L/14 @ 336px + Vicuna, letterbox
    **{model_id: ("clip-vit-l-336px", "vicuna-v15-7b", arch, "letterbox") for model_id, arch in (
        ("reproduction-llava-v15+7b", "gelu-mlp"), ("full-ft-multi-stage+7b", "gelu-mlp"),
        ("one-stage+7b", "no-align+gelu-mlp"), ("full-ft-one-stage+7b", "no-align+gelu-mlp"),
        ("vicuna-no-cotraining+7b", "no-align+gelu-mlp"), ("train-1.25-epochs+7b", "no-align+gelu-mlp"),
        ("train-1.5-epochs+7b", "no-align+gelu-mlp"), ("train-2-epochs+7b", "no-align+gelu-mlp"),
        ("train-3-epochs+7b", "no-align+gelu-mlp"), ("llava-lvis4v+7b", "no-align+gelu-mlp"),
        ("llava-lrv+7b", "no-align+gelu-mlp"), ("llava-lvis4v-lrv+7b", "no-align+gelu-mlp"))},
    "llama2+7b": ("clip-vit-l-336px", "llama2-7b-pure", "no-align+gelu-mlp", "letterbox"),
    "llama2-no-cotraining+7b": ("clip-vit-l-336px", "llama2-7b-pure", "no-align+gelu-mlp", "letterbox"),
    "clip-336px-resize-crop+7b": ("clip-vit-l-336px", "vicuna-v15-7b", "no-align+gelu-mlp", "resize-crop"),
    "clip-336px-resize-naive+7b": ("clip-vit-l-336px", "vicuna-v15-7b", "no-align+gelu-mlp", "resize-naive"),
    "siglip-384px-letterbox+7b": ("siglip-vit-so400m-384px", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox"),
    "siglip-384px-resize-crop+7b": ("siglip-vit-so400m-384px", "vicuna-v15-7b", "no-align+gelu-mlp", "resize-crop"),
    "siglip-384px-resize-naive+7b": ("siglip-vit-so400m-384px", "vicuna-v15-7b", "no-align+gelu-mlp", "resize-naive"),
    "dinoclip-336px-letterbox+7b": ("dinoclip-vit-l-336px", "vicuna-v15-7b", "no-align+fused-gelu-mlp", "letterbox"),
    "dinoclip-336px-resize-naive+7b": ("dinoclip-vit-l-336px", "vicuna-v15-7b", "no-align+fused-gelu-mlp", "resize-naive"),
    "dinosiglip-384px-letterbox+7b": ("dinosiglip-vit-so-384px", "vicuna-v15-7b", "no-align+fused-gelu-mlp", "letterbox"),
    "dinosiglip-384px-resize-naive+7b": ("dinosiglip-vit-so-384px", "vicuna-v15-7b", "no-align+fused-gelu-mlp", "resize-naive"),
    "prism-clip-controlled+7b": ("clip-vit-l-336px", "llama2-7b-pure", "no-align+gelu-mlp", "resize-naive"),
    "prism-clip+7b": ("clip-vit-l-336px", "llama2-7b-pure", "no-align+gelu-mlp", "resize-naive"),
    "prism-siglip-controlled+7b": ("siglip-vit-so400m-384px", "llama2-7b-pure", "no-align+gelu-mlp", "resize-naive"),
    "prism-siglip+7b": ("siglip-vit-so400m-384px", "llama2-7b-pure", "no-align+gelu-mlp", "resize-naive"),
    "prism-dinosiglip-controlled+7b": ("dinosiglip-vit-so-384px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive"),
    "prism-dinosiglip+7b": ("dinosiglip-vit-so-384px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive"),
}
# OpenVLA's HF code: three modules that sit next to the weights (as in OpenVLA's own HF repositories);
# `auto_map` names them locally, so loading needs no hub. OpenVLA's checkout keeps them under CODE_DIR.
OPENVLA_CODE_FILES = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
OPENVLA_CODE_DIR = Path("prismatic") / "extern" / "hf"
MODEL_AUTO_MAP = {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                  "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"}
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                      "AutoProcessor": "processing_prismatic.PrismaticProcessor"}
EXTRA_CONFIG_KEY = "vla_config"  # our VLAConfig.to_dict() (tiny architectures have no OpenVLA id)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
SENTENCEPIECE_FILE = "tokenizer.model"
# Keys transformers 5 writes into tokenizer_config.json that describe the saving process, not the tokenizer.
_SAVE_TIME_TOKENIZER_KEYS = ("is_local", "local_files_only")

# ----------------------------------------------------------------------------- name mapping
# (our prefix, their prefix). Prismatic names are flattened as "<component>.<key>".
HF_PREFIXES = (
    ("vision_backbone.featurizer.", "vision_backbone.featurizer."),
    ("vision_backbone.fused_featurizer.", "vision_backbone.fused_featurizer."),
    ("projector.", "projector."),
    ("llm_backbone.llm.", "language_model."),
)
HF_LAYERSCALE = (".gamma", ".scale_factor")  # vision LayerScale params only
_PRISMATIC_PROJECTOR = {
    "fused-gelu-mlp": (("projector.fc1.", "projector.projector.0."), ("projector.fc2.", "projector.projector.2."),
                       ("projector.fc3.", "projector.projector.4.")),
    "gelu-mlp": (("projector.fc1.", "projector.projector.0."), ("projector.fc2.", "projector.projector.2.")),
    "linear": (("projector.fc1.", "projector.projector."),),
}
PRISMATIC_COMPONENTS = ("vision_backbone", "projector", "llm_backbone")


def prismatic_prefixes(vision_backbone: str, projector: str) -> tuple[tuple[str, str], ...]:
    """(our prefix, Prismatic prefix) pairs for one architecture (``vision_backbone``: our registry name)."""
    if projector not in _PRISMATIC_PROJECTOR:
        raise ValueError(f"Unknown projector {projector!r}; Prismatic has {sorted(_PRISMATIC_PROJECTOR)}")
    return (*_prismatic_vision_prefixes(vision_backbone), *_PRISMATIC_PROJECTOR[projector],
            ("llm_backbone.llm.", "llm_backbone.llm."))


def _prismatic_vision_prefixes(vision_backbone: str) -> tuple[tuple[str, str], ...]:
    """A single backbone is Prismatic's ``featurizer``; a fused one is ``dino_featurizer`` plus
    ``siglip_featurizer`` (DinoSigLIP) or ``clip_featurizer`` (DinoCLIP), after its second timm model."""
    timm_ids = get_vision_spec(vision_backbone).timm_ids
    if len(timm_ids) == 1:
        return (("vision_backbone.featurizer.", "vision_backbone.featurizer."),)
    second = "siglip" if "siglip" in timm_ids[1] else "clip" if "clip" in timm_ids[1] else None
    if second is None:
        raise ValueError(f"Prismatic has no fused backbone pairing DINOv2 with {timm_ids[1]!r} ({vision_backbone})")
    return (("vision_backbone.featurizer.", "vision_backbone.dino_featurizer."),
            ("vision_backbone.fused_featurizer.", f"vision_backbone.{second}_featurizer."))


def _swap_prefix(name: str, pairs: tuple[tuple[str, str], ...], to_theirs: bool) -> str | None:
    for ours, theirs in pairs:
        source, target = (ours, theirs) if to_theirs else (theirs, ours)
        if name.startswith(source):
            return target + name[len(source):]
    return None


def to_hf_name(name: str) -> str:
    """Our parameter name -> OpenVLA HF name."""
    hf = _swap_prefix(name, HF_PREFIXES, to_theirs=True)
    if hf is None:
        raise ValueError(f"Parameter {name!r} has no OpenVLA HF name")
    if hf.startswith("vision_backbone.") and hf.endswith(HF_LAYERSCALE[0]):
        hf = hf[: -len(HF_LAYERSCALE[0])] + HF_LAYERSCALE[1]
    return hf


def from_hf_name(hf: str) -> str | None:
    """OpenVLA HF name -> our parameter name (None: not an OpenVLA parameter)."""
    if hf.startswith("vision_backbone.") and hf.endswith(HF_LAYERSCALE[1]):
        hf = hf[: -len(HF_LAYERSCALE[1])] + HF_LAYERSCALE[0]
    return _swap_prefix(hf, HF_PREFIXES, to_theirs=False)


def from_prismatic_name(key: str, vision_backbone: str, projector: str) -> str | None:
    """Flattened Prismatic name ("<component>.<key>") -> our parameter name."""
    return _swap_prefix(key, prismatic_prefixes(vision_backbone, projector), to_theirs=False)


# ----------------------------------------------------------------------------- public API
def load_openvla(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 tokenizer_path: str | os.PathLike | None = None, *, action_head: str = "tokens", chunk_size: int = 1,
                 action_dim: int | None = None, image_views: Sequence[str] = ("primary",), use_proprio: bool = False,
                 film: bool = False, norm_stats: Mapping[str, Any] | None = None) -> VLA:
    """Load an OpenVLA HF directory, a Prismatic run directory or a Prismatic ``.pt`` checkpoint.

    ``dtype=None`` keeps the checkpoint's dtype (bf16 for OpenVLA's releases). ``tokenizer_path``
    overrides where the tokenizer comes from (default: the checkpoint dir when it has one, else
    the LLM registry's source, as Prismatic does).

    The chunk settings (``build_vla``'s, docs/action-chunks.md) start an OpenVLA-OFT fine-tune from OpenVLA's
    weights: the modules they enable (action head, proprio projector, FiLM linears) are added freshly
    initialised, in the weights' dtype, sized from ``norm_stats`` (the training data's statistics) exactly as
    ``build_vla`` sizes them. ``norm_stats`` are added to the checkpoint's, replacing same-named datasets (what
    train.py does with every model it fine-tunes). The ``l1`` head's 4-D mask needs the LLM on ``sdpa`` or
    ``eager``: another kernel (``flash_attention_2``) is switched to ``sdpa``.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists() and safetensors_files(path, required=False):
        vla = _load_hf(path, dtype, tokenizer_path)
    elif path.suffix == ".pt" or (path / "checkpoints").is_dir():
        vla = _load_prismatic(path, dtype, tokenizer_path)
    else:
        raise ValueError(f"{path} is neither an OpenVLA HF directory (config.json + model*.safetensors) "
                         "nor a Prismatic run directory/.pt checkpoint")
    chunk = chunk_fields(norm_stats, action_head=action_head, chunk_size=chunk_size, action_dim=action_dim,
                         image_views=image_views, use_proprio=use_proprio, film=film)
    _add_chunk_setup(vla, chunk, str(path))
    vla.norm_stats = {**vla.norm_stats, **(norm_stats or {})}
    return vla.to(device).eval()


def _add_chunk_setup(vla: VLA, chunk: Mapping[str, Any], source: str) -> None:
    """Give a loaded OpenVLA the ``chunk`` fields and their new modules (in the weights' dtype), with an LLM
    attention kernel that takes the ``l1`` head's mask. Default ``chunk`` fields keep the checkpoint's own."""
    current = vla.config
    attn = current.attn_implementation
    if chunk["action_head"] == "l1" and attn not in MASKED_ATTN_IMPLEMENTATIONS:
        attn = "sdpa"
    requested = replace(current, attn_implementation=attn, **chunk)
    plain = {f.name: f.default for f in fields(VLAConfig) if f.name in CHUNK_FIELDS}
    if _chunk_settings(requested) in (_chunk_settings(current), plain):
        return
    if _chunk_settings(current) != plain:
        raise ValueError(f"{source} already holds a model with chunk settings {_chunk_settings(current)}; "
                         f"load_openvla adds chunk modules to a plain OpenVLA only, so load it without chunk "
                         f"settings (requested {_chunk_settings(requested)})")
    vla.config = requested
    weights_dtype = next(vla.parameters()).dtype
    for module in vla.add_chunk_modules():
        module.to(weights_dtype)
    llm = vla.llm_backbone.llm
    if requested.action_head == "l1" and llm.config._attn_implementation != requested.llm_attn_implementation:
        llm.set_attn_implementation(requested.llm_attn_implementation)


def _chunk_settings(config: VLAConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in CHUNK_FIELDS}


def export_openvla_hf(vla: VLA, out_dir: str | os.PathLike, max_shard_size: int = 5 * 2**30, *,
                      openvla_code: str | os.PathLike | None = None,
                      tokenizer_model: str | os.PathLike | None = None) -> Path:
    """Write ``vla`` in OpenVLA's HF layout (config, sharded safetensors, tokenizer, preprocessor, stats).

    OpenVLA's ``AutoModelForVision2Seq.from_pretrained(out_dir, trust_remote_code=True)`` loads it once
    OpenVLA's three HF modules (:data:`OPENVLA_CODE_FILES`) lie next to the weights: ``openvla_code`` (an
    OpenVLA checkout, or the folder holding them) copies them there. ``tokenizer_model``: the SentencePiece
    model to ship as ``tokenizer.model`` (default: the one the tokenizer came from, see
    :func:`write_openvla_tokenizer`).

    OpenVLA's layout has no names for OpenVLA-OFT's modules: a model with any is refused, pointing to
    :func:`vla.models.oft_format.export_oft` (OFT's layout: this one plus component files).
    """
    config = vla.config
    added = [name for name, present in (("action_head", config.action_head != "tokens"),
                                        ("proprio_projector", config.proprio_dim > 0),
                                        ("FiLM scale/shift of the vision_backbone blocks", config.film)) if present]
    if added:
        raise ValueError(f"OpenVLA's HF layout has no names for this model's OpenVLA-OFT modules {added}; export it "
                         "with vla.models.oft_format.export_oft (OFT's layout: this layout plus "
                         "action_head--/proprio_projector--/vision_backbone--<step>_checkpoint.pt) or with save_vla")
    return write_openvla_hf(vla, {to_hf_name(k): v for k, v in vla.state_dict().items()}, out_dir, max_shard_size,
                            openvla_code=openvla_code, tokenizer_model=tokenizer_model)


def write_openvla_hf(vla: VLA, tensors: Mapping[str, torch.Tensor], out_dir: str | os.PathLike,
                     max_shard_size: int = 5 * 2**30, *, openvla_code: str | os.PathLike | None = None,
                     tokenizer_model: str | os.PathLike | None = None) -> Path:
    """Write ``tensors`` (OpenVLA HF names) as ``vla``'s HF directory: what :func:`export_openvla_hf` and OFT's
    export (whose modules go to separate files) share. ``openvla_code``/``tokenizer_model``: as
    :func:`export_openvla_hf`."""
    config = openvla_hf_config(vla)  # everything that can be refused is, before anything is written
    sentencepiece = resolve_sentencepiece_model(vla, tokenizer_model)
    code_files = openvla_code_files(openvla_code) if openvla_code is not None else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_shards(tensors, out, max_shard_size)
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json", _preprocessor_config(vla, config))
    _write_json(out / "generation_config.json", {
        "bos_token_id": vla.llm_backbone.bos_token_id, "eos_token_id": vla.llm_backbone.eos_token_id,
        "pad_token_id": vla.tokenizer.pad_token_id,
    })
    _write_json(out / "dataset_statistics.json", vla.norm_stats)
    write_openvla_tokenizer(vla, out, sentencepiece)
    for file in code_files:  # auto_map names these modules: they must sit next to the weights
        shutil.copyfile(file, out / file.name)
    return out


def openvla_code_files(source: str | os.PathLike) -> list[Path]:
    """OpenVLA's HF modules (:data:`OPENVLA_CODE_FILES`) in ``source``: an OpenVLA checkout (they are under
    :data:`OPENVLA_CODE_DIR`) or the folder holding them. The project ships no copy of OpenVLA's code; the
    user's checkout provides it."""
    root = Path(source)
    folder = root / OPENVLA_CODE_DIR if (root / OPENVLA_CODE_DIR).is_dir() else root
    missing = [name for name in OPENVLA_CODE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"openvla_code={str(source)!r}: {folder} lacks {missing}; give an OpenVLA checkout "
                                f"(its HF modules are under {OPENVLA_CODE_DIR}) or the folder holding "
                                f"{list(OPENVLA_CODE_FILES)}")
    return [folder / name for name in OPENVLA_CODE_FILES]


def write_openvla_tokenizer(vla: VLA, out: Path, sentencepiece_model: Path | None) -> None:
    """The tokenizer files OpenVLA's pinned transformers 4.40.1 / tokenizers 0.19.1 read, and so do we.

    * ``tokenizer.json`` with BPE merges as ``"a b"`` strings: tokenizers >= 0.20 writes ``["a", "b"]`` pairs,
      which 0.19 rejects ("data did not match any variant of untagged enum ModelWrapper"); both read strings.
    * ``tokenizer_config.json`` with ``legacy: false`` and no ``add_prefix_space: null``: the tokenization
      transformers 5 does; 4.40.1's SentencePiece (slow) tokenizer would otherwise drop the leading "▁" (or,
      without ``legacy: false``, tokenize the legacy way) and give other ids.
    * ``tokenizer.model``, the SentencePiece model (as OpenVLA's releases ship): ``sentencepiece_model``, from
      :func:`resolve_sentencepiece_model`. Where there is none, a warning says so and the export has
      ``tokenizer.json`` only (which those versions also read).
    """
    tokenizer = vla.tokenizer
    tokenizer.save_pretrained(str(out))
    _write_legacy_tokenizer_json(out / "tokenizer.json")
    config_file = out / "tokenizer_config.json"
    config = {k: v for k, v in json.loads(config_file.read_text()).items() if k not in _SAVE_TIME_TOKENIZER_KEYS}
    if config.get("add_prefix_space", False) is None:  # 4.40.1's slow tokenizer reads null as "no prefix space"
        del config["add_prefix_space"]
    _write_json(config_file, {**config, "legacy": False})
    target = out / SENTENCEPIECE_FILE
    if sentencepiece_model is None:
        target.unlink(missing_ok=True)  # a stale one from an earlier export may not match
        logger.warning("No SentencePiece tokenizer.model found for %s's tokenizer: %s has tokenizer.json only; "
                       "pass tokenizer_model=<path> to ship one", vla.config.llm_backbone, out)
    elif not (target.exists() and target.samefile(sentencepiece_model)):
        shutil.copyfile(sentencepiece_model, target)


def resolve_sentencepiece_model(vla: VLA, given: str | os.PathLike | None) -> Path | None:
    """The SentencePiece model to ship with ``vla``: ``given``, else the file its tokenizer was loaded from,
    else the LLM registry's where this machine has it (None: none found). It must hold the tokenizer's
    vocabulary, id for id (:func:`check_sentencepiece_vocabulary`)."""
    model_file = Path(given) if given is not None else sentencepiece_source(vla)
    if model_file is not None:
        check_sentencepiece_vocabulary(model_file, vla.tokenizer)
    return model_file


def sentencepiece_source(vla: VLA) -> Path | None:
    """The SentencePiece model ``vla``'s tokenizer came from: the file it was loaded with (a checkpoint's
    ``tokenizer.model``), else the LLM registry's source where this machine has it."""
    loaded_from = getattr(vla.tokenizer, "vocab_file", None)
    if isinstance(loaded_from, str) and loaded_from.endswith(".model") and Path(loaded_from).is_file():
        return Path(loaded_from)
    return sentencepiece_model_file(vla.llm_backbone.spec)


def check_sentencepiece_vocabulary(model_file: Path, tokenizer) -> None:
    """Refuse a SentencePiece model whose pieces are not the tokenizer's, id for id (shipping it would give
    OpenVLA's slow tokenizer other ids than the model was trained with)."""
    import sentencepiece

    if not model_file.is_file():
        raise FileNotFoundError(f"SentencePiece model not found: {model_file}")
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    ours = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    if pieces != ours:
        first = next((i for i, (a, b) in enumerate(zip(pieces, ours)) if a != b), min(len(pieces), len(ours)))
        raise ValueError(f"{model_file} does not hold this model's vocabulary ({len(pieces)} pieces vs the "
                         f"tokenizer's {len(ours)}; first difference at id {first}); give the SentencePiece model "
                         "the tokenizer was built from (tokenizer_model=<path>)")


def _write_legacy_tokenizer_json(path: Path) -> None:
    """Rewrite a BPE ``tokenizer.json``'s merges as ``"a b"`` strings (the format tokenizers 0.19 reads)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    merges = model.get("merges") or []
    if model.get("type") != "BPE" or not merges or isinstance(merges[0], str):
        return
    spaced = [pair for pair in merges if any(" " in part for part in pair)]
    if spaced:
        raise ValueError(f"{path}: merges {spaced[:3]} hold spaces, which the \"a b\" merge format of tokenizers "
                         "0.19 (OpenVLA's pin) cannot express")
    model["merges"] = [" ".join(pair) for pair in merges]
    write_bytes_atomic(path, json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))


def openvla_hf_config(vla: VLA) -> dict[str, Any]:
    """The ``OpenVLAConfig`` fields (``config.json``) describing ``vla``, plus our ``vla_config``."""
    ours = vla.config
    vision_id = _openvla_id(OPENVLA_VISION_IDS, ours.vision_backbone, "vision backbone")
    llm_id = _openvla_llm_id(ours.llm_backbone, vla.llm_backbone.llm.config.model_type)
    fused = vla.vision_backbone.fused_featurizer is not None
    expected_projector = "fused-gelu-mlp" if fused else "gelu-mlp"
    if ours.projector != expected_projector:
        raise ValueError(f"OpenVLA's HF model pairs a {'fused' if fused else 'single'} vision backbone with the "
                         f"{expected_projector!r} projector; this model has {ours.projector!r}")
    dtype = str(next(vla.parameters()).dtype).removeprefix("torch.")
    spec = get_vision_spec(ours.vision_backbone)
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": dict(MODEL_AUTO_MAP),
        "model_type": "openvla",
        "vision_backbone_id": vision_id,
        "llm_backbone_id": llm_id,
        "arch_specifier": f"no-align+{ours.projector}",
        "use_fused_vision_backbone": fused,
        "image_resize_strategy": vla.image_transform.resize_strategy,
        "image_sizes": [spec.image_size] * len(spec.timm_ids),
        "timm_model_ids": list(spec.timm_ids),
        "timm_override_act_layers": act_layers(spec),
        "hf_llm_id": OPENVLA_LLM_HF_PATHS[llm_id],
        "llm_max_length": 2048,
        "pad_token_id": vla.tokenizer.pad_token_id,
        "pad_to_multiple_of": 64,
        "output_projector_states": False,
        "text_config": _text_config(vla.llm_backbone.llm.config, dtype),
        "norm_stats": vla.norm_stats,
        "n_action_bins": vla.action_tokenizer.n_bins,
        "torch_dtype": dtype,
        "transformers_version": transformers.__version__,
        EXTRA_CONFIG_KEY: ours.to_dict(),
    }


# ----------------------------------------------------------------------------- HF import
def _load_hf(path: Path, dtype: torch.dtype | None, tokenizer_path: str | os.PathLike | None) -> VLA:
    config = read_hf_config(path)
    names = hf_architecture(config)
    if names.get("action_head", "tokens") != "tokens":
        raise ValueError(f"{path} holds an OpenVLA-OFT policy ({names['action_head']} head, its modules in separate "
                         "files): load it with load_checkpoint or vla.models.oft_format.load_oft")
    norm_stats = config.get("norm_stats") or read_stats(path / "dataset_statistics.json")
    vla_config = VLAConfig.from_dict(names)
    check_act_layers(config, vla_config.vision_backbone, path / "config.json")
    with tokenizer_source(tokenizer_path, path) as tokenizer:
        vla = empty_vla(vla_config, norm_stats, hf_llm_config(config), tokenizer)
    keep_sentencepiece_model(vla, path, tokenizer_path)
    index = hf_index(path)
    shapes = {}
    for file, keys in group_by_file(index).items():
        with safe_open(str(file), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in keys})
    mapping = {hf: from_hf_name(hf) for hf in shapes}
    check_keys(vla, mapping, shapes, str(path))
    return assign_weights(vla, _iter_safetensors(index, mapping, dtype))


def read_hf_config(path: Path) -> dict[str, Any]:
    """``config.json`` of an OpenVLA HF directory, checked to be OpenVLA's."""
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") not in ("openvla", "prismatic"):
        raise ValueError(f"{path / 'config.json'} has model_type {config.get('model_type')!r}; expected 'openvla'")
    return config


def hf_architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The saved :class:`VLAConfig` fields an HF ``config.json`` describes: ours (``vla_config``) when we wrote
    it, else translated from OpenVLA's backbone ids."""
    return dict(config.get(EXTRA_CONFIG_KEY) or names_from_openvla_ids(
        config["vision_backbone_id"], config["llm_backbone_id"], config["arch_specifier"],
        config.get("image_resize_strategy", "letterbox"), config.get("n_action_bins", 256)))


def check_act_layers(config: Mapping[str, Any], vision_backbone: str, source: Path) -> None:
    """Refuse a config whose ``timm_override_act_layers`` differ from what our ``vision_backbone`` is built with:
    OpenVLA's code builds the ViTs with the config's activations, so the weights were trained with those."""
    declared = config.get("timm_override_act_layers")
    built = act_layers(get_vision_spec(vision_backbone))
    if declared is not None and list(declared) != built:
        raise ValueError(f"{source}: timm_override_act_layers {list(declared)} differ from the activations our "
                         f"{vision_backbone!r} backbone uses ({built}); the weights would run with the wrong ones")


def act_layers(spec: VisionSpec) -> list[str | None]:
    """OpenVLA's ``timm_override_act_layers`` for a vision spec: one per timm model (None: timm's default)."""
    return [spec.act_layer(i) for i in range(len(spec.timm_ids))]


def keep_sentencepiece_model(vla: VLA, checkpoint_dir: Path, tokenizer_override: str | os.PathLike | None) -> None:
    """Point the tokenizer at the checkpoint's own ``tokenizer.model`` (it was loaded from a staged copy that is
    gone now), so an export ships the very SentencePiece model the checkpoint came with."""
    model_file = checkpoint_dir / SENTENCEPIECE_FILE
    if tokenizer_override is None and model_file.is_file():
        vla.tokenizer.vocab_file = str(model_file)


def hf_llm_config(config: Mapping[str, Any]) -> PreTrainedConfig:
    """The checkpoint's own LLM config, from ``text_config`` over the model type's defaults (as OpenVLA builds it)."""
    text_config = {k: v for k, v in config.get("text_config", {}).items()
                   if k not in ("torch_dtype", "dtype", "transformers_version", "architectures")}
    text_config.setdefault("model_type", "llama")  # OpenVLA's LLM_BACKBONE_TO_HF_METACLASS for Llama-family ids
    return AutoConfig.for_model(**text_config)


def hf_index(path: Path) -> dict[str, Path]:
    """HF name -> shard file, from ``model.safetensors.index.json`` or the shards' headers."""
    index_file = path / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        return {name: path / file for name, file in weight_map.items()}
    index = {}
    for file in safetensors_files(path, required=True):
        with safe_open(str(file), framework="pt") as f:
            index.update({name: file for name in f.keys()})
    return index


def safetensors_files(path: Path, required: bool) -> list[Path]:
    """The directory's ``model*.safetensors`` shards (``required``: none is an error)."""
    files = sorted(path.glob("model*.safetensors"))
    if required and not files:
        raise FileNotFoundError(f"No model*.safetensors in {path}")
    return files


def group_by_file(index: Mapping[str, Path]) -> dict[Path, list[str]]:
    """Tensor names per shard file, so each file is opened once."""
    groups: dict[Path, list[str]] = {}
    for name, file in index.items():
        groups.setdefault(file, []).append(name)
    return groups


def _iter_safetensors(index: Mapping[str, Path], mapping: Mapping[str, str], dtype: torch.dtype | None,
                      ) -> Iterator[tuple[str, torch.Tensor]]:
    for file, keys in group_by_file(index).items():
        with safe_open(str(file), framework="pt") as f:
            for key in keys:
                yield mapping[key], cast_floating(f.get_tensor(key), dtype)


# ----------------------------------------------------------------------------- Prismatic import
def _load_prismatic(path: Path, dtype: torch.dtype | None, tokenizer_path: str | os.PathLike | None) -> VLA:
    checkpoint, run_dir = _prismatic_paths(path)
    config = json.loads(_require(run_dir / "config.json").read_text())
    norm_stats = read_stats(_require(run_dir / "dataset_statistics.json"))
    vla_config = VLAConfig.from_dict(config.get(EXTRA_CONFIG_KEY) or _names_from_prismatic_config(config, run_dir))
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{checkpoint} is not a Prismatic checkpoint: expected a dict with a 'model' entry")
    absent = [c for c in PRISMATIC_COMPONENTS if c not in model]
    if absent:
        raise ValueError(f"{checkpoint} lacks model components {absent} (saved with only trainable modules?)")
    flat = {f"{component}.{key}": value for component in PRISMATIC_COMPONENTS for key, value in model[component].items()}
    llm_config = prismatic_llm_config(flat, vla_config.llm_backbone, config.get("text_config") or {},
                                      f"{checkpoint} (config: {run_dir / 'config.json'})")
    with tokenizer_source(tokenizer_path, run_dir) as tokenizer:
        vla = empty_vla(vla_config, norm_stats, llm_config, tokenizer)
    mapping = {key: from_prismatic_name(key, vla_config.vision_backbone, vla_config.projector) for key in flat}
    check_keys(vla, mapping, {k: tuple(v.shape) for k, v in flat.items()}, str(checkpoint))
    return assign_weights(vla, ((mapping[k], cast_floating(v, dtype)) for k, v in flat.items()))


def prismatic_llm_config(flat: Mapping[str, torch.Tensor], llm_backbone: str, text_config: Mapping[str, Any],
                         source: str) -> PreTrainedConfig:
    """A Prismatic checkpoint's LLM config: the registry's for ``llm_backbone`` (Prismatic's is the named LLM's
    HF config), with the sizes the tensors fix (vocabulary, width, MLP width, depth, key/value heads), and
    ``text_config`` (from the run's ``config.json``) over both. Head counts are not in the shapes: an LLM
    narrower or wider than the registry's must give ``num_attention_heads`` there."""
    prefix = "llm_backbone.llm.model."
    embed = flat.get(prefix + "embed_tokens.weight")
    gate = flat.get(prefix + "layers.0.mlp.gate_proj.weight")
    keys = flat.get(prefix + "layers.0.self_attn.k_proj.weight")
    if embed is None or gate is None or keys is None:
        raise ValueError(f"{source} lacks the Llama tensors that size its LLM (llm_backbone: llm.model."
                         "embed_tokens.weight, layers.0.mlp.gate_proj.weight, layers.0.self_attn.k_proj.weight)")
    registry = dict(get_llm_spec(llm_backbone).architecture)
    depth = 1 + max(int(k[len(prefix + "layers."):].split(".")[0]) for k in flat if k.startswith(prefix + "layers."))
    sizes = {"vocab_size": embed.shape[0], "hidden_size": embed.shape[1], "intermediate_size": gate.shape[0],
             "num_hidden_layers": depth}
    if sizes["hidden_size"] != registry["hidden_size"] and "num_attention_heads" not in text_config:
        raise ValueError(f"{source}: the LLM is {sizes['hidden_size']} wide, not {llm_backbone}'s "
                         f"{registry['hidden_size']}, and its attention head count is not in the tensors' shapes; "
                         "add \"text_config\": {\"num_attention_heads\": <heads>} to the run's config.json")
    heads = text_config.get("num_attention_heads", registry["num_attention_heads"])
    sizes["num_key_value_heads"] = keys.shape[0] * heads // sizes["hidden_size"]
    return AutoConfig.for_model(**{**registry, **sizes, **text_config})


def _prismatic_paths(path: Path) -> tuple[Path, Path]:
    """(checkpoint .pt, run dir): ``latest-checkpoint.pt`` or the highest ``step-*.pt`` of a run dir."""
    if path.suffix == ".pt":
        return _require(path), path.resolve().parents[1]
    checkpoints = path / "checkpoints"
    latest = checkpoints / "latest-checkpoint.pt"
    if latest.exists():
        return latest, path
    steps = sorted(checkpoints.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    if not steps:
        raise FileNotFoundError(f"No latest-checkpoint.pt or step-*.pt under {checkpoints}")
    return steps[-1], path


def _names_from_prismatic_config(config: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """A Prismatic VLM run stores its model config under "model"; a VLA run names its ``base_vlm``."""
    if "model" in config:
        m = config["model"]
        return names_from_openvla_ids(m["vision_backbone_id"], m["llm_backbone_id"], m["arch_specifier"],
                                      m["image_resize_strategy"], 256)
    base_vlm = config.get("vla", {}).get("base_vlm")
    if base_vlm not in PRISMATIC_BASE_VLMS:
        raise ValueError(f"{run_dir / 'config.json'}: unsupported base_vlm {base_vlm!r}; "
                         f"known: {sorted(PRISMATIC_BASE_VLMS)}")
    return names_from_openvla_ids(*PRISMATIC_BASE_VLMS[base_vlm], 256)


# ----------------------------------------------------------------------------- shared helpers (also oft_format's)
def names_from_openvla_ids(vision_id: str, llm_id: str, arch_specifier: str, resize: str, n_bins: int) -> dict[str, Any]:
    """The saved :class:`VLAConfig` fields of an architecture named by OpenVLA/Prismatic ids."""
    return {
        "vision_backbone": _lookup(OPENVLA_VISION_IDS, vision_id, "vision backbone"),
        "llm_backbone": _lookup(OPENVLA_LLM_IDS, llm_id, "LLM backbone"),
        "projector": arch_specifier.split("+")[-1],  # "no-align+fused-gelu-mlp" -> "fused-gelu-mlp"
        "image_resize_strategy": resize,
        "n_action_bins": n_bins,
    }


def empty_vla(config: VLAConfig, norm_stats: Mapping[str, Any], llm_config: PreTrainedConfig,
              tokenizer_path: Path | None) -> VLA:
    """A VLA skeleton on the meta device (no memory). Its LLM is built from the checkpoint's own config, as
    OpenVLA's code does, so the projector's output follows that LLM's width (a derived checkpoint may carry a
    smaller Llama than the one its ``llm_backbone_id`` names); the registry entry gives tokenizer and prompt.
    Where that LLM is not the registry's, the config records it (``llm_architecture``), so the model saves and
    rebuilds as itself."""
    architecture = llm_architecture(llm_config)
    if architecture != _registry_llm_architecture(config.llm_backbone):
        config = replace(config, llm_architecture=architecture)
    with torch.device("meta"):
        return VLA(config, norm_stats=norm_stats, tokenizer_path=str(tokenizer_path) if tokenizer_path else None,
                   llm_config=llm_config)


@contextlib.contextmanager
def tokenizer_source(override: str | os.PathLike | None, checkpoint_dir: Path) -> Iterator[Path | None]:
    """Where to load the tokenizer from, with the checkpoint's tokenizer files staged on their own.

    ``AutoTokenizer`` also reads a directory's ``config.json``; OpenVLA's has an ``auto_map`` to remote
    code, which would prompt for ``trust_remote_code``. A directory holding only the tokenizer files
    avoids that. None: the LLM registry's tokenizer (Prismatic runs ship none).
    """
    if override is not None or not (checkpoint_dir / "tokenizer_config.json").exists():
        yield Path(override) if override is not None else None
        return
    with tempfile.TemporaryDirectory(prefix="openvla-tokenizer-") as staged:
        for file in checkpoint_dir.iterdir():
            if file.name in TOKENIZER_FILES:
                shutil.copy(file, staged)
        yield Path(staged)


def check_keys(vla: VLA, mapping: Mapping[str, str | None], shapes: Mapping[str, tuple], source: str) -> None:
    """Raise one error listing unknown, missing and shape-mismatched keys."""
    expected = {k: tuple(v.shape) for k, v in vla.state_dict().items()}
    unknown = sorted(k for k, ours in mapping.items() if ours is None or ours not in expected)
    missing = sorted(set(expected) - {ours for ours in mapping.values() if ours is not None})
    mismatched = sorted(f"{k}: checkpoint {shapes[k]} vs model {expected[ours]}" for k, ours in mapping.items()
                        if ours in expected and shapes[k] != expected[ours])
    if unknown or missing or mismatched:
        raise ValueError(f"Checkpoint {source} does not match the model: unknown keys {unknown}, "
                         f"missing keys {missing}, shape mismatches {mismatched}")


def assign_weights(vla: VLA, tensors: Iterator[tuple[str, torch.Tensor]]) -> VLA:
    """Put the checkpoint tensors into the meta skeleton, then materialize what no checkpoint holds."""
    vla.load_state_dict(dict(tensors), strict=True, assign=True)
    _rebuild_derived_buffers(vla)
    on_meta = [name for name, t in itertools.chain(vla.named_parameters(), vla.named_buffers()) if t.is_meta]
    if on_meta:
        raise RuntimeError(f"The checkpoint left {on_meta} on the meta device: neither loaded nor rebuilt")
    return vla


def _rebuild_derived_buffers(vla: VLA) -> None:
    """Rebuild on CPU the weightless HF modules whose buffers are all non-persistent (derived from
    the config, e.g. the rotary embedding's ``inv_freq``): checkpoints never hold them."""
    for name, module in list(vla.named_modules()):
        buffers = dict(module.named_buffers(recurse=False))
        derived = (isinstance(getattr(module, "config", None), PreTrainedConfig) and buffers
                   and set(buffers) <= module._non_persistent_buffers_set and not any(module.parameters()))
        if derived and any(b.is_meta for b in buffers.values()):
            with torch.device("cpu"):
                replace_module(vla, name, type(module)(config=module.config))


def cast_floating(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """``tensor`` in ``dtype`` if it is floating (None: as stored); integer tensors keep theirs."""
    return tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)


def llm_architecture(llm_config: PreTrainedConfig) -> dict[str, Any]:
    """``model_type``, ``vocab_size`` and the fields of ``llm_config`` that differ from its class's defaults:
    what rebuilds it (:attr:`VLAConfig.llm_architecture`). The padding id is left out (the tokenizer sets it)."""
    defaults = type(llm_config)().to_dict()
    differing = {k: v for k, v in llm_config.to_dict().items()
                 if k not in _UNSTORED_TEXT_KEYS and k != "pad_token_id" and v != defaults.get(k, _ABSENT)}
    if differing.get("head_dim") == llm_config.hidden_size // llm_config.num_attention_heads:
        del differing["head_dim"]  # derived (and unknown to transformers 4.40.1)
    if differing.get("num_key_value_heads") == llm_config.num_attention_heads:
        del differing["num_key_value_heads"]  # unset means "as many as the attention heads" in both versions
    return {"model_type": llm_config.model_type, **differing, "vocab_size": llm_config.vocab_size}


def _registry_llm_architecture(llm_backbone: str) -> dict[str, Any]:
    """:func:`llm_architecture` of what the registry builds for ``llm_backbone`` (vocabulary padded as Prismatic)."""
    spec = get_llm_spec(llm_backbone)
    return llm_architecture(AutoConfig.for_model(**{**spec.architecture, "vocab_size": spec.padded_vocab_size()}))


def _text_config(llm_config: PreTrainedConfig, dtype: str) -> dict[str, Any]:
    """The LLM config as OpenVLA stores it: the keys that differ from the config class's defaults (OpenVLA
    rebuilds the rest from those defaults, which agree between transformers 4.40.1 and 5 for Llama's
    architecture keys), in the fields transformers 4.40.1 reads."""
    text = llm_architecture(llm_config)
    del text["model_type"]
    rope = text.pop("rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"OpenVLA's transformers 4.40.1 cannot express this LLM's rope_parameters {rope}")
    if "rope_theta" in rope:  # 4.40.1 reads the flat field
        text["rope_theta"] = rope["rope_theta"]
    return {**text, "model_type": llm_config.model_type, "vocab_size": llm_config.vocab_size,
            "pad_token_id": llm_config.pad_token_id, "torch_dtype": dtype}


_UNSTORED_TEXT_KEYS = ("transformers_version", "architectures", "dtype", "torch_dtype", "_name_or_path", "model_type")
_ABSENT = object()


def _preprocessor_config(vla: VLA, config: Mapping[str, Any]) -> dict[str, Any]:
    """``PrismaticImageProcessor`` fields, including the torchvision params it derives."""
    transform = vla.image_transform
    n, size = transform.n_views, transform.image_size
    means = transform.mean.view(n, 3).tolist()
    stds = transform.std.view(n, 3).tolist()
    naive = transform.resize_strategy == "resize-naive"
    return {
        "auto_map": dict(PROCESSOR_AUTO_MAP),
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "use_fused_vision_backbone": config["use_fused_vision_backbone"],
        "image_resize_strategy": transform.resize_strategy,
        "input_sizes": [[3, size, size]] * n,
        "interpolations": ["bicubic"] * n,
        "means": means,
        "stds": stds,
        "tvf_resize_params": [{"size": [size, size] if naive else size, "interpolation": 3, "max_size": None,
                               "antialias": True}] * n,
        "tvf_crop_params": [{"output_size": [size, size]}] * n,
        "tvf_normalize_params": [{"mean": m, "std": s, "inplace": False} for m, s in zip(means, stds)],
        "tvf_do_letterbox": transform.resize_strategy == "letterbox",
        "tvf_letterbox_fill": list(transform.fill) if transform.resize_strategy == "letterbox" else None,
    }


def _write_shards(tensors: Mapping[str, torch.Tensor], out: Path, max_shard_size: int) -> None:
    """HF sharding: ``model.safetensors`` or ``model-0000i-of-0000N.safetensors`` + index."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _openvla_id(table: Mapping[str, str], ours: str, what: str) -> str:
    """OpenVLA's id for our registry name; a ``tiny-*`` test variant takes its full-size architecture's id."""
    for theirs, name in table.items():
        if name.removeprefix("tiny-") == ours.removeprefix("tiny-"):
            return theirs
    raise ValueError(f"OpenVLA has no {what} id for {ours!r}; exportable: {sorted(table.values())}")


def _openvla_llm_id(ours: str, model_type: str) -> str:
    if ours in OPENVLA_LLM_IDS.values():
        return _openvla_id(OPENVLA_LLM_IDS, ours, "LLM backbone")
    if model_type == "llama":  # tiny/custom Llamas: OpenVLA builds the LLM from text_config anyway
        return "llama2-7b-pure"
    raise ValueError(f"OpenVLA's HF code supports Llama-family LLMs only; {ours!r} is {model_type!r}")


def _lookup(table: Mapping[str, str], key: str, what: str) -> str:
    if key not in table:
        raise ValueError(f"Unsupported OpenVLA {what} id {key!r}; supported: {sorted(table)}")
    return table[key]


def read_stats(path: Path) -> dict[str, Any]:
    """A ``dataset_statistics.json`` (missing: an error naming it)."""
    return json.loads(_require(path).read_text())


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"Missing {path}")
    return path


def _write_json(path: Path, data: Any) -> None:
    write_json_atomic(path, data)
