"""Offline evaluation: loss, action-token accuracy and L1 of a checkpoint on a split of prepared shards.

The batches come from :class:`VLADataModule`'s validation loader and the scores from the model's own
loss and :meth:`VLA.action_metrics`, averaged as training's ``val/*`` metrics are (loss weighted by
batch size, accuracy and L1 by action-token count), so a checkpoint scored here on the data it was
validated on reproduces what training logged, without any training code.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from vla.atomic import write_json_atomic
from vla.contract.normalization import normalization_kind
from vla.data.datamodule import VLADataModule
from vla.models.vla import VLA

RESULTS_FILE = "offline_metrics.json"
METRIC_NAMES = ("loss", "action_accuracy", "l1")
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def evaluate_offline(vla: VLA, datamodule: VLADataModule, device: str = "cpu", precision: str = "32-true",
                     limit_batches: int | None = None) -> dict[str, float]:
    """``{"loss", "action_accuracy", "l1", "<dataset>/action_accuracy", ...}`` over the datamodule's val split.

    ``limit_batches`` scores only the first batches (training's ``trainer.limit_val_batches``);
    ``None`` scores the whole split. ``precision``: ``32-true`` or autocast ``bf16-mixed`` / ``16-mixed``.
    """
    if limit_batches is not None and limit_batches < 1:
        raise ValueError(f"limit_batches must be >= 1 or None (the whole split), got {limit_batches}")
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    _warn_on_statistics_mismatch(vla.norm_stats, datamodule.dataset_statistics)
    datamodule.attach_processor(vla.processor)
    datamodule.setup("validate")
    vla = vla.to(device).eval()
    autocast = (torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision]) if PRECISIONS[precision]
                else nullcontext())
    sums: dict[str, float] = defaultdict(float)
    with torch.inference_mode(), autocast:
        for index, batch in enumerate(datamodule.val_dataloader()):
            if limit_batches is not None and index >= limit_batches:
                break
            _accumulate(vla, batch, device, sums)
    if not sums:
        raise ValueError("the split has no batches to score")
    metrics = {"loss": sums["loss"] / sums["examples"], "action_accuracy": sums["correct"] / max(sums["count"], 1),
               "l1": sums["l1"] / max(sums["count"], 1)}
    names = sorted({key.split("/")[0] for key in sums if "/" in key})
    if len(names) > 1:  # per-dataset scores, as training logs them for mixed batches
        for name in names:
            count = max(sums[f"{name}/count"], 1)
            metrics[f"{name}/action_accuracy"] = sums[f"{name}/correct"] / count
            metrics[f"{name}/l1"] = sums[f"{name}/l1"] / count
    return metrics


def _accumulate(vla: VLA, batch: dict[str, Any], device: str, sums: dict[str, float]) -> None:
    """Add one batch's loss, correct/total action tokens and L1 (overall and per dataset) to ``sums``."""
    tensors = {key: batch[key].to(device) for key in ("pixel_values", "input_ids", "attention_mask", "labels")}
    out = vla(**tensors)
    batch_size = tensors["input_ids"].shape[0]
    metrics = vla.action_metrics(out.logits, out.targets)
    sums["loss"] += float(out.loss) * batch_size
    sums["examples"] += batch_size
    sums["correct"] += float(metrics["correct"])
    sums["count"] += float(metrics["count"])
    sums["l1"] += float(metrics["l1"]) * float(metrics["count"])
    names = batch.get("dataset_name") or []
    for name, m in vla.action_metrics_by_dataset(out.logits, out.targets, tensors["labels"], names).items():
        sums[f"{name}/correct"] += float(m["correct"])
        sums[f"{name}/count"] += float(m["count"])
        sums[f"{name}/l1"] += float(m["l1"]) * float(m["count"])


def _warn_on_statistics_mismatch(model_stats: Mapping[str, Any], data_stats: Mapping[str, Any]) -> None:
    """Shards are normalized with the data's statistics; a model trained on other ones sees shifted targets.

    Compares the normalization kind (missing: ``bounds_q99``, as OpenVLA) and the statistics that kind
    uses (``q01``/``q99``, ``min``/``max`` or ``mean``/``std``) plus the mask.
    """
    for name, stats in data_stats.items():
        if name not in model_stats:
            continue
        ours, theirs = model_stats[name]["action"], stats["action"]
        our_kind, their_kind = normalization_kind(ours), normalization_kind(theirs)
        if our_kind != their_kind:
            warnings.warn(f"The checkpoint un-normalizes {name!r} actions as {our_kind!r}, but the prepared data is "
                          f"normalized as {their_kind!r}: the scores are against targets normalized differently "
                          "from what the model learnt", stacklevel=3)
            continue
        keys = _KIND_STATISTICS[our_kind]
        same = all(np.allclose(ours[key], theirs[key]) for key in keys)
        dims = len(theirs["q01"])
        same = same and np.array_equal(np.asarray(ours.get("mask", [True] * dims), dtype=bool),
                                       np.asarray(theirs.get("mask", [True] * dims), dtype=bool))
        if not same:
            warnings.warn(f"The checkpoint's action statistics for {name!r} ({our_kind}: {', '.join(keys)}, mask) differ "
                          "from the prepared data's: the scores are against targets normalized differently from what "
                          "the model learnt", stacklevel=3)


_KIND_STATISTICS = {"bounds_q99": ("q01", "q99"), "bounds": ("min", "max"), "normal": ("mean", "std")}


def write_offline_results(out_dir: str | os.PathLike, metrics: Mapping[str, float],
                          settings: Mapping[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out / RESULTS_FILE, {"metrics": dict(metrics), "settings": dict(settings)})


def print_offline_table(metrics: Mapping[str, float], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("metric", "value"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    ordered = [m for m in METRIC_NAMES if m in metrics] + sorted(k for k in metrics if k not in METRIC_NAMES)
    for name in ordered:
        table.add_row(name, f"{metrics[name]:.4f}")
    (console or Console()).print(table)
