"""The README model card every exported model directory carries: what it is and how to use it.

Written by :func:`vla.models.io.save_vla` from the model itself (architecture, sizes, statistics
keys) plus what the caller knows about its training (data, mixture, steps, final metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vla.contract.normalization import normalization_kind
from vla.models.vla import VLA

CARD_FILE = "README.md"


def model_card(vla: VLA, directory: str, training: Mapping[str, Any] | None = None) -> str:
    """Markdown for ``<directory>/README.md``; ``training`` keys: data, mixture, stage, steps, metrics, command."""
    config = vla.config
    lines = [
        f"# {vla.model_id}",
        "",
        "A Vision-Language-Action policy in the OpenVLA mould: vision backbone -> projector -> LLM emitting",
        f"{vla.action_tokenizer.n_bins}-bin action tokens, un-normalized with the dataset statistics stored here.",
        "",
        "## Architecture",
        "",
        "| part | choice | parameters |",
        "|---|---|---:|",
        *_parameter_rows(vla),
        "",
        f"Image input: {vla.vision_backbone.image_size} px ({config.image_resize_strategy}), "
        f"{vla.num_patches} patches per view; prompt: OpenVLA's `In: What action should the robot take to ...?`.",
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
        f'action = policy.act(image, "pick up the cup"{_key_argument(vla.norm_stats)})  # image: uint8 [H, W, 3]',
        "```",
        "",
        "Files: `model.safetensors` (weights), `vla_config.json` (architecture), `dataset_statistics.json` "
        "(OpenVLA's layout), `tokenizer/`.",
        "",
    ]
    return "\n".join(lines)


def _parameter_rows(vla: VLA) -> list[str]:
    config = vla.config
    parts = (("vision backbone", config.vision_backbone, vla.vision_backbone), ("projector", config.projector, vla.projector),
             ("LLM", config.llm_backbone, vla.llm_backbone))
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
