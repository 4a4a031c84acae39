"""The README model card every exported model directory carries: what it is and how to use it.

Written by :func:`vla.models.io.save_vla` from the model itself (architecture, sizes, statistics
keys) plus what the caller knows about its training (data, mixture, steps, final metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vla.contract.normalization import normalization_kind
from vla.models.config import VLAConfig
from vla.models.vla import VLA

CARD_FILE = "README.md"


def model_card(vla: VLA, directory: str, training: Mapping[str, Any] | None = None) -> str:
    """Markdown for ``<directory>/README.md``; ``training`` keys: data, mixture, stage, steps, metrics, command."""
    config = vla.config
    lines = [
        f"# {vla.model_id}",
        "",
        *_summary(vla),
        "",
        "## Architecture",
        "",
        "| part | choice | parameters |",
        "|---|---|---:|",
        *_parameter_rows(vla),
        "",
        f"Image input: {vla.vision_backbone.image_size} px ({config.image_resize_strategy}), "
        f"{vla.num_patches} patches per view; prompt: OpenVLA's `In: What action should the robot take to ...?`.",
        *_inputs(config),
        "",
        *_training_section(training),
        "## Normalization",
        "",
        "Actions are un-normalized with these statistics (`unnorm_key`), where the mask is true, by each "
        "dataset's normalization kind (listed below the table):",
        "",
        "| unnorm_key | action dim | normalized dims (mask) | transitions |",
        "|---|---:|---|---:|",
        *_statistics_rows(vla.norm_stats),
        "",
        "## Use it",
        "",
        "```bash",
        f"vla-eval checkpoint={directory} env=sim            # closed loop in the built-in sim",
        f"vla-serve checkpoint={directory} port=8000         # OpenVLA-compatible POST /act",
        "```",
        "",
        "```python",
        "from vla.policy import load_policy",
        f'policy = load_policy("{directory}")',
        f'action = policy.act(image, "pick up the cup"{_key_argument(vla.norm_stats)})  # image: uint8 [H, W, 3]'
        + ("" if config.action_head == "tokens" else f"; action: [{config.chunk_size}, {config.action_dim}] chunk"),
        "```",
        "",
        "Files: `model.safetensors` (weights), `vla_config.json` (architecture), `dataset_statistics.json` "
        "(OpenVLA's layout), `tokenizer/`.",
        "",
    ]
    return "\n".join(lines)


def _summary(vla: VLA) -> list[str]:
    """What the model predicts and how: OpenVLA's action tokens or OpenVLA-OFT's regressed chunks."""
    config = vla.config
    if config.action_head == "tokens":
        return ["A Vision-Language-Action policy in the OpenVLA mould: vision backbone -> projector -> LLM emitting",
                f"{vla.action_tokenizer.n_bins}-bin action tokens, un-normalized with the dataset statistics stored here."]
    return ["A Vision-Language-Action policy in the OpenVLA-OFT mould: vision backbone -> projector -> LLM, whose final",
            f"hidden states at {config.chunk_size} x {config.action_dim} placeholders (one parallel pass) feed the "
            f"`{config.action_head}` action head:",
            f"chunks of {config.chunk_size} actions, un-normalized with the dataset statistics stored here."]


def _inputs(config: VLAConfig) -> list[str]:
    """Views, proprio and FiLM, for models that use more than OpenVLA's single image."""
    if config.image_views == ("primary",) and not config.proprio_dim and not config.film:
        return []
    views = ", ".join(f"`{view}`" for view in config.image_views)
    proprio = f"one proprio token ({config.proprio_dim} values)" if config.proprio_dim else "no proprio"
    film = "; the instruction modulates every ViT block (FiLM)" if config.film else ""
    return ["", f"Camera views, in order: {views}; {proprio}{film}."]


def _parameter_rows(vla: VLA) -> list[str]:
    config = vla.config
    parts = [("vision backbone", config.vision_backbone, vla.vision_backbone), ("projector", config.projector, vla.projector),
             ("LLM", config.llm_backbone, vla.llm_backbone)]
    if config.proprio_dim:
        parts.append(("proprio projector", f"{config.proprio_dim} -> LLM", vla.proprio_projector))
    if hasattr(vla, "action_head"):
        parts.append(("action head", config.action_head, vla.action_head))
    rows = [f"| {part} | `{name}` | {sum(p.numel() for p in module.parameters()):,} |" for part, name, module in parts]
    rows.append(f"| total | | {sum(p.numel() for p in vla.parameters()):,} |")
    return rows


def _training_section(training: Mapping[str, Any] | None) -> list[str]:
    if not training:
        return ["## Training", "", "Not recorded (exported without training metadata).", ""]
    lines = ["## Training", ""]
    for key, label in (("data", "data"), ("mixture", "mixture"), ("stage", "stage"), ("steps", "optimizer steps"),
                       ("command", "command")):
        if training.get(key) is not None:
            value = training[key]
            lines.append(f"- {label}: `{value}`" if key == "command" else f"- {label}: {value}")
    metrics = training.get("metrics") or {}
    if metrics:
        lines += ["", "| final metric | value |", "|---|---:|",
                  *(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()) if isinstance(value, float))]
    return [*lines, ""]


def _statistics_rows(norm_stats: Mapping[str, Any]) -> list[str]:
    """The statistics table's rows, then (after the table) each key's normalization kind and inverse.

    A kind missing from the statistics (OpenVLA's checkpoints) is ``bounds_q99``, as OpenVLA.
    """
    rows, kinds = [], []
    for key, stats in sorted(norm_stats.items()):
        action = stats.get("action", {})
        mask = action.get("mask") or [True] * len(action.get("q01", []))
        rows.append(f"| `{key}` | {len(action.get('q01', []))} | {''.join('1' if m else '0' for m in mask)} | "
                    f"{stats.get('num_transitions', '')} |")
        kind = normalization_kind(action)
        kinds.append(f"- `{key}`: `{kind}` ({_INVERSES[kind]})")
    if not rows:
        return ["| (none) | | | |"]
    return [*rows, "", "Normalization kind per `unnorm_key` (the inverse applied where the mask is true):", "", *kinds]


_INVERSES = {"bounds_q99": "`0.5 (a + 1) (q99 - q01) + q01`", "bounds": "`0.5 (a + 1) (max - min) + min`",
             "normal": "`a * std + mean`"}


def _key_argument(norm_stats: Mapping[str, Any]) -> str:
    """Models with several datasets need ``unnorm_key``; show the first."""
    return f', unnorm_key="{sorted(norm_stats)[0]}"' if len(norm_stats) > 1 else ""
