"""Import (and export) OpenVLA-OFT's fine-tuned checkpoints (docs/oft.md has the layout and its sources).

An OFT checkpoint directory is OpenVLA's HF layout (the LoRA-merged model) plus separate
``torch.save``d state dicts: ``action_head--<step>_checkpoint.pt`` (the L1 head, keys prefixed ``module.``
by DDP), ``proprio_projector--<step>_checkpoint.pt`` (with proprio, ``module.`` too) and, for FiLM (OFT+),
``vision_backbone--<step>_checkpoint.pt`` (the whole FiLM-wrapped vision backbone with its LoRA unmerged:
the merged safetensors lack the trained vision LoRA in that case). ``config.json`` records none of OFT's
choices: D and P are read from the weights' shapes, FiLM from the file's presence, and K and the camera
views (which no weight depends on) from OFT's per-robot constants, the robot being told by the dataset
names in ``dataset_statistics.json`` as OFT tells it by the command line.

The HF part goes through :mod:`vla.models.openvla_format` (meta-device skeleton, tensors assigned in
place), with every source's names and shapes checked in one pass. :func:`export_oft` writes our ``l1``-head
models in this layout (plus their own config, so they load without OFT's constants).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from vla.atomic import atomic_write
from vla.contract.normalization import with_normalization_kind
from vla.models.config import VLAConfig
from vla.models.openvla_format import (
    assign_weights,
    cast_floating,
    check_keys,
    empty_vla,
    from_hf_name,
    group_by_file,
    hf_architecture,
    hf_index,
    hf_llm_config,
    keep_sentencepiece_model,
    read_hf_config,
    read_stats,
    safetensors_files,
    to_hf_name,
    tokenizer_source,
    write_openvla_hf,
)
from vla.models.vla import VLA


@dataclass(frozen=True)
class OFTPlatform:
    """One robot's constants in OFT's ``prismatic/vla/constants.py`` (+ its eval's camera views)."""

    chunk_size: int  # NUM_ACTIONS_CHUNK
    action_dim: int  # ACTION_DIM
    proprio_dim: int  # PROPRIO_DIM
    normalization: str | None  # ACTION_PROPRIO_NORMALIZATION_TYPE, as our kind name (None: the statistics' own)
    image_views: tuple[str, ...] | None  # None: OFT's views have no names of ours; pass image_views


OFT_PLATFORMS = {  # in the order OFT's detect_robot_platform tests them
    "libero": OFTPlatform(8, 7, 8, "bounds_q99", ("primary", "wrist")),  # full_image, wrist_image
    "aloha": OFTPlatform(25, 14, 14, "bounds", None),  # cam_high, cam_left_wrist, cam_right_wrist
    "bridge": OFTPlatform(5, 7, 7, "bounds_q99", ("primary",)),
}
ACTION_HEAD, PROPRIO_PROJECTOR, FILM_VISION = "action_head", "proprio_projector", "vision_backbone"
UNSUPPORTED_COMPONENTS = {"noisy_action_projector": "a diffusion action head (--use_diffusion)"}
DDP_PREFIX = "module."
# OFT wraps every nn.Linear (target_modules="all-linear") with LoRA, lora_alpha=min(r, 16): finetune.py and
# openvla_utils._apply_film_to_vla.
MAX_LORA_ALPHA = 16
_FILM_LAYER = re.compile(r"\.blocks\.\d+\.(?:scale|shift)\.")  # a FiLM linear's parameter (ours and OFT's name)
_FILMED_BLOCK = re.compile(r"(\.blocks\.\d+)\.block\.")  # the ViT block inside a FiLM wrapper
_LORA_KEY = re.compile(r"^(?P<layer>.+)\.(?:lora_(?P<ab>[AB])\.[^.]+|base_layer)\.(?P<param>weight|bias)$")


def component_file(checkpoint_dir: str | os.PathLike, component: str) -> Path | None:
    """The directory's ``<component>--<step or latest>_checkpoint.pt``, None if absent (OFT allows one)."""
    found = sorted(Path(checkpoint_dir).glob(f"{component}--*checkpoint.pt"))
    if len(found) > 1:
        raise ValueError(f"{checkpoint_dir} holds several {component} checkpoints {[f.name for f in found]}; "
                         "OFT expects exactly one per checkpoint directory")
    return found[0] if found else None


def is_oft_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an OFT checkpoint directory (it has an action head file)."""
    return Path(path).is_dir() and component_file(path, ACTION_HEAD) is not None


@dataclass(frozen=True)
class Component:
    """One ``torch.save``d OFT component: its file, its state dict without DDP's prefix, and that prefix
    (``module.`` or empty) for naming keys as the file does."""

    file: Path
    state: dict[str, torch.Tensor]
    prefix: str

    def key(self, name: str) -> str:
        """``name`` as the file spells it, with the file: how errors point at a tensor."""
        return f"{self.file.name}: {self.prefix}{name}"


def load_component(file: Path) -> Component:
    """Unpickle one component state dict (``weights_only``) and strip DDP's ``module.`` prefix (as OFT's
    ``load_component_state_dict``). Read into memory, not memory-mapped: a run saving ``latest`` checkpoints
    rewrites these files in place, under a model loaded from them."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} is not a state dict (a mapping of names to tensors)")
    prefixed = any(k.startswith(DDP_PREFIX) for k in state)
    return Component(file, {k.removeprefix(DDP_PREFIX): v for k, v in state.items()}, DDP_PREFIX if prefixed else "")


def from_oft_name(component: str, key: str) -> str | None:
    """OFT component key (``module.`` stripped; FiLM LoRA already merged) -> our parameter name."""
    if component == ACTION_HEAD:
        return f"action_head.{key}" if key.startswith("model.") else None
    if component == PROPRIO_PROJECTOR:
        return f"proprio_projector.{key}"
    if component == FILM_VISION:
        return from_hf_name(key) if key.startswith("vision_backbone.") else None
    raise ValueError(f"Unknown OFT component {component!r}")


def merge_film_lora(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The FiLM vision file's tensors with each LoRA layer merged: ``base + B @ A * min(r, 16) / r``
    (float32 arithmetic, stored dtype kept); other tensors unchanged."""
    plain: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            plain[key] = tensor
            continue
        part = f"lora_{match['ab']}" if match["ab"] else f"base.{match['param']}"
        if match["ab"] and match["param"] != "weight":
            raise ValueError(f"{source}: {key} is a LoRA bias, which OFT's LoRA (bias='none') never has")
        layer = layers.setdefault(match["layer"], {})
        if part in layer:
            raise ValueError(f"{source}: {key} is a second LoRA adapter on {match['layer']}; OFT trains one")
        layer[part] = tensor
    for layer, parts in layers.items():
        if not {"base.weight", "lora_A", "lora_B"} <= set(parts):
            raise ValueError(f"{source}: LoRA layer {layer} has only {sorted(parts)} "
                             "(needs base_layer.weight, lora_A and lora_B)")
        base, a, b = parts["base.weight"], parts["lora_A"], parts["lora_B"]
        rank = a.shape[0]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != rank or (b.shape[0], a.shape[1]) != tuple(base.shape):
            raise ValueError(f"{source}: LoRA layer {layer} has lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)} "
                             f"for a base weight {tuple(base.shape)}")
        scaling = min(rank, MAX_LORA_ALPHA) / rank
        plain[f"{layer}.weight"] = (base.float() + (b.float() @ a.float()) * scaling).to(base.dtype)
        if "base.bias" in parts:
            plain[f"{layer}.bias"] = parts["base.bias"]
    return plain


def detect_platform(norm_stats: Mapping[str, Any], source: str) -> str:
    """The OFT platform the dataset names point to, tested in OFT's order (libero, aloha, bridge)."""
    names = " ".join(norm_stats).lower()
    for platform in OFT_PLATFORMS:
        if platform in names:
            return platform
    raise ValueError(f"Cannot tell the OFT platform from the dataset names {sorted(norm_stats)} in {source}; "
                     f"pass platform= (one of {list(OFT_PLATFORMS)}), as OFT's scripts take it from the command line")


def load_oft(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *,
             platform: str | None = None, chunk_size: int | None = None, image_views: Sequence[str] | None = None,
             tokenizer_path: str | os.PathLike | None = None) -> VLA:
    """Load an OFT checkpoint directory as an ``l1``-head VLA in eval mode.

    ``platform`` (``libero``/``aloha``/``bridge``; None: detected from the statistics' dataset names) gives
    K, the views and the normalization kind; ``chunk_size`` / ``image_views`` override its K / views. D and P
    come from the weights and must equal the platform's. ``dtype=None`` casts the separately saved components
    to the HF weights' dtype (OFT runs them in bf16 next to the bf16 model).

    A directory written by :func:`export_oft` records its whole config (``config.json``'s ``vla_config``):
    with ``platform=None`` that config, not a platform, gives K, the views, D and P, and the statistics keep
    their own normalization kinds.
    """
    path = Path(path)
    config = _read_hf_config(path)
    dataset_statistics = path / "dataset_statistics.json"
    norm_stats = read_stats(dataset_statistics)
    names = hf_architecture(config)
    exported = platform is None and names.get("action_head") == "l1"
    if exported:
        constants = OFTPlatform(names.get("chunk_size", 1), names["action_dim"], names.get("proprio_dim", 0), None,
                                tuple(names.get("image_views", ("primary",))))
        told_by = "config.json's vla_config"
    else:
        platform = platform if platform is not None else detect_platform(norm_stats, str(dataset_statistics))
        if platform not in OFT_PLATFORMS:
            raise ValueError(f"Unknown OFT platform {platform!r}; OFT has {list(OFT_PLATFORMS)}")
        constants = OFT_PLATFORMS[platform]
        told_by = f"OFT's {platform}"
    views = image_views if image_views is not None else constants.image_views
    if views is None:
        raise ValueError(f"OFT's {platform} policies see cameras that have no view names of ours; pass image_views")

    for name, what in UNSUPPORTED_COMPONENTS.items():
        if (file := component_file(path, name)) is not None:
            raise ValueError(f"{file} belongs to {what}; only OFT's L1 regression head is supported")
    if component_file(path, ACTION_HEAD) is None:
        raise FileNotFoundError(f"No {ACTION_HEAD}--*checkpoint.pt in {path}: not an OFT L1-head checkpoint")
    components = {name: load_component(file) for name in (ACTION_HEAD, PROPRIO_PROJECTOR, FILM_VISION)
                  if (file := component_file(path, name)) is not None}
    film = FILM_VISION in components
    if film:
        vision = components[FILM_VISION]
        components[FILM_VISION] = Component(vision.file, merge_film_lora(vision.state, vision.file.name), vision.prefix)
    action_dim = _action_dim(components[ACTION_HEAD], constants, told_by)
    proprio_dim = _proprio_dim(components.get(PROPRIO_PROJECTOR), constants, told_by)
    if exported and (proprio_dim, film) != (constants.proprio_dim, names.get("film", False)):
        raise ValueError(f"{path}: the component files give proprio_dim {proprio_dim} and film {film}, but {told_by} "
                         f"has proprio_dim {constants.proprio_dim} and film {names.get('film', False)}: a "
                         f"{PROPRIO_PROJECTOR}-- or {FILM_VISION}--*checkpoint.pt file is missing or extra")

    index = hf_index(path)
    if film:  # the FiLM file holds the whole trained vision backbone; the merged one lacks its LoRA
        index = {k: f for k, f in index.items() if not k.startswith("vision_backbone.")}
    vla_config = VLAConfig.from_dict({
        **names, "action_head": "l1", "chunk_size": chunk_size if chunk_size is not None else constants.chunk_size,
        "action_dim": action_dim, "image_views": list(views), "proprio_dim": proprio_dim, "film": film})
    if constants.normalization is not None:
        norm_stats = {name: with_normalization_kind(stats, constants.normalization) for name, stats in norm_stats.items()}
    with tokenizer_source(tokenizer_path, path) as tokenizer:
        vla = empty_vla(vla_config, norm_stats, hf_llm_config(config), tokenizer)
    keep_sentencepiece_model(vla, path, tokenizer_path)

    # One name space over every source (component keys as "<file>: <key>") so one error lists every problem.
    mapping: dict[str, str | None] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for file, keys in group_by_file(index).items():
        with safe_open(str(file), framework="pt") as f:
            for key in keys:
                mapping[key], shapes[key] = from_hf_name(key), tuple(f.get_slice(key).get_shape())
    for name, component in components.items():
        for key, tensor in component.state.items():
            mapping[component.key(key)], shapes[component.key(key)] = from_oft_name(name, key), tuple(tensor.shape)
    check_keys(vla, mapping, shapes, str(path))
    vla = assign_weights(vla, _tensors(index, components, dtype, dtype or _stored_dtype(index)))
    step = components[ACTION_HEAD].file.name.removeprefix(f"{ACTION_HEAD}--").removesuffix("_checkpoint.pt")
    steps = {"steps": int(step)} if step.isdigit() else {}
    # image_aug: OFT trains with random crops and its evals center-crop by default; our eval follows this flag.
    vla.training_info = steps if exported else {"source": "openvla-oft", "platform": platform, "image_aug": True, **steps}
    return vla.to(device).eval()


def export_oft(vla: VLA, out_dir: str | os.PathLike, step: int | str | None = None,
               max_shard_size: int = 5 * 2**30, *, openvla_code: str | os.PathLike | None = None,
               tokenizer_model: str | os.PathLike | None = None) -> Path:
    """Write an ``l1``-head VLA in OpenVLA-OFT's layout, which :func:`load_oft` (and ``load_checkpoint``) reads back.

    As OFT's ``finetune.py`` saves a run: the OpenVLA HF directory of backbone, projector and LLM (plain ViT
    blocks, FiLM layers left out, as OFT's merged model), ``action_head--<step>_checkpoint.pt`` and
    ``proprio_projector--<step>_checkpoint.pt`` under DDP's ``module.`` prefix and, with FiLM,
    ``vision_backbone--<step>_checkpoint.pt`` (the whole FiLMed vision backbone, no prefix, nothing to merge).
    ``config.json``'s ``vla_config`` also records K, the views, D, P and FiLM, which OFT's files do not.
    ``step`` names the component files (None: ``training_info["steps"]``, else ``latest``); component files of
    an earlier export to ``out_dir`` are removed, as a directory holds one of each. ``openvla_code`` and
    ``tokenizer_model``: as :func:`vla.models.openvla_format.export_openvla_hf` (give OFT's checkout for its code).
    """
    if vla.config.action_head != "l1":
        raise ValueError(f"OFT's layout holds l1-head policies; this VLA's action_head is {vla.config.action_head!r} "
                         "(export it with export_openvla_hf, or with save_vla)")
    if step is None:
        steps = vla.training_info.get("steps")
        step = steps if isinstance(steps, int) else "latest"
    hf: dict[str, torch.Tensor] = {}
    components: dict[str, dict[str, torch.Tensor]] = {ACTION_HEAD: {}, PROPRIO_PROJECTOR: {}, FILM_VISION: {}}
    for name, tensor in vla.state_dict().items():
        module, _, key = name.partition(".")
        if module in (ACTION_HEAD, PROPRIO_PROJECTOR):
            components[module][DDP_PREFIX + key] = tensor
            continue
        if vla.config.film and module == "vision_backbone":
            components[FILM_VISION][to_hf_name(name)] = tensor
            if _FILM_LAYER.search(name):
                continue
            name = _FILMED_BLOCK.sub(r"\1.", name)
        hf[to_hf_name(name)] = tensor
    out = write_openvla_hf(vla, hf, out_dir, max_shard_size, openvla_code=openvla_code, tokenizer_model=tokenizer_model)
    for component in (*components, *UNSUPPORTED_COMPONENTS):
        for stale in out.glob(f"{component}--*checkpoint.pt"):
            stale.unlink()
    for component, state in components.items():
        if state:
            atomic_write(out / f"{component}--{step}_checkpoint.pt", lambda file, state=state: torch.save(state, file))
    return out


def _read_hf_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(f"OFT checkpoint directory not found: {path}")
    if not (path / "config.json").exists() or not safetensors_files(path, required=False):
        raise FileNotFoundError(
            f"{path} has no merged model (config.json + model*.safetensors): the run kept only its LoRA adapter "
            "(--merge_lora_during_training False); merge it with OFT's vla-scripts/merge_lora_weights_and_save.py")
    return read_hf_config(path)


def _action_dim(head: Component, constants: OFTPlatform, told_by: str) -> int:
    """D from the head's output layer (``model.fc2.weight`` [D, H]), checked against what ``told_by`` says."""
    key = "model.fc2.weight"
    if key not in head.state:
        kind = ("a diffusion action head, not supported" if any(k.startswith("noise_predictor.") for k in head.state)
                else "not OFT's L1RegressionActionHead")
        raise ValueError(f"{head.key(key)} is missing: {kind} (keys {sorted(head.state)[:6]}...)")
    action_dim = head.state[key].shape[0]
    if action_dim != constants.action_dim:
        raise ValueError(f"{head.key(key)} has shape {tuple(head.state[key].shape)}, i.e. action_dim {action_dim}, "
                         f"but {told_by} ACTION_DIM is {constants.action_dim}")
    return action_dim


def _proprio_dim(projector: Component | None, constants: OFTPlatform, told_by: str) -> int:
    """P from the projector's input layer (``fc1.weight`` [H, P]); 0 without a projector file."""
    if projector is None:
        return 0
    key = "fc1.weight"
    if key not in projector.state or projector.state[key].dim() != 2:
        raise ValueError(f"{projector.key(key)} is missing or not 2-D: not OFT's ProprioProjector "
                         f"(keys {sorted(projector.state)})")
    proprio_dim = projector.state[key].shape[1]
    if proprio_dim != constants.proprio_dim:
        raise ValueError(f"{projector.key(key)} has shape {tuple(projector.state[key].shape)}, i.e. proprio_dim "
                         f"{proprio_dim}, but {told_by} PROPRIO_DIM is {constants.proprio_dim}")
    return proprio_dim


def _stored_dtype(index: Mapping[str, Path]) -> torch.dtype:
    """The dtype of the HF weights (read from one tensor's first row)."""
    key, file = next(iter(index.items()))
    with safe_open(str(file), framework="pt") as f:
        return f.get_slice(key)[:1].dtype


def _tensors(index: Mapping[str, Path], components: Mapping[str, Component], dtype: torch.dtype | None,
             component_dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor): the HF shards in ``dtype`` (None: as stored), then the components in ``component_dtype``."""
    for file, keys in group_by_file(index).items():
        with safe_open(str(file), framework="pt") as f:
            for key in keys:
                yield from_hf_name(key), cast_floating(f.get_tensor(key), dtype)
    for name, component in components.items():
        for key, tensor in component.state.items():
            yield from_oft_name(name, key), cast_floating(tensor, component_dtype)
