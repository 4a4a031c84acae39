"""Offline evaluation: loss, action-token accuracy and L1 of a checkpoint on a split of prepared shards.

The batches come from :class:`VLADataModule`'s validation loader and the scores from the model's own
loss and :meth:`VLA.action_metrics`, averaged as training's ``val/*`` metrics are (loss weighted by
batch size, accuracy and L1 by action-token count), so a checkpoint scored here on the data it was
validated on reproduces what training logged, without any training code.

Action-chunk models (``l1`` head, docs/action-chunks.md) are scored with :meth:`VLA.chunk_metrics` as
training logs them: the loss, and the L1 over real (not past-the-episode-end) chunk steps in total
(``l1``), per action dimension (``l1/dim<i>``) and per chunk step (``l1/t<k>``), each weighted by the
real values it averages. The datamodule must sample what the model reads (:func:`data_layout`).
"""

from __future__ import annotations

import os
import re
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
from vla.models.vla import VLA, ChunkOutput

RESULTS_FILE = "offline_metrics.json"
METRIC_NAMES = ("loss", "action_accuracy", "l1")
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def data_layout(vla: VLA) -> dict[str, Any]:
    """The ``VLADataModule`` keyword arguments whose samples are what ``vla`` reads: its chunk size, camera
    views (in order) and whether it takes proprio, all from its ``VLAConfig`` (one source for model and data)."""
    config = vla.config
    return {"chunk_size": config.chunk_size, "image_views": tuple(config.image_views), "proprio": config.proprio_dim > 0}


def evaluate_offline(vla: VLA, datamodule: VLADataModule, device: str = "cpu", precision: str = "32-true",
                     limit_batches: int | None = None) -> dict[str, float]:
    """``{"loss", "action_accuracy", "l1", "<dataset>/action_accuracy", ...}`` over the datamodule's val split.

    Chunk models (``l1`` head): ``{"loss", "l1", "l1/dim<i>", "l1/t<k>", "<dataset>/l1", "<dataset>/l1/dim<i>",
    "<dataset>/l1/t<k>"}``; a step with no real value in the split scores 0. Per-dataset scores only for
    mixtures, as training logs them. The datamodule must be built with :func:`data_layout`'s arguments.
    ``limit_batches`` scores only the first batches (training's ``trainer.limit_val_batches``);
    ``None`` scores the whole split. ``precision``: ``32-true`` or autocast ``bf16-mixed`` / ``16-mixed``.
    """
    if limit_batches is not None and limit_batches < 1:
        raise ValueError(f"limit_batches must be >= 1 or None (the whole split), got {limit_batches}")
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    _check_data_layout(vla, datamodule)
    _warn_on_statistics_mismatch(vla.norm_stats, datamodule.dataset_statistics)
    datamodule.attach_processor(vla.processor)
    datamodule.setup("validate")
    vla = vla.to(device).eval()
    autocast = (torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision]) if PRECISIONS[precision]
                else nullcontext())
    chunked = vla.config.action_head != "tokens"
    sums: dict[str, float] = defaultdict(float)
    chunk_sums: dict[str, dict[str, list[float]]] = defaultdict(dict)
    with torch.inference_mode(), autocast:
        for index, batch in enumerate(datamodule.val_dataloader()):
            if limit_batches is not None and index >= limit_batches:
                break
            if chunked:
                _accumulate_chunks(vla, batch, device, chunk_sums)
            else:
                _accumulate(vla, batch, device, sums)
    if not (chunk_sums if chunked else sums):
        raise ValueError("the split has no batches to score")
    if chunked:
        return _chunk_means(chunk_sums)
    metrics = {"loss": sums["loss"] / sums["examples"], "action_accuracy": sums["correct"] / max(sums["count"], 1),
               "l1": sums["l1"] / max(sums["count"], 1)}
    names = sorted({key.split("/")[0] for key in sums if "/" in key})
    if len(names) > 1:  # per-dataset scores, as training logs them for mixed batches
        for name in names:
            count = max(sums[f"{name}/count"], 1)
            metrics[f"{name}/action_accuracy"] = sums[f"{name}/correct"] / count
            metrics[f"{name}/l1"] = sums[f"{name}/l1"] / count
    return metrics


def _check_data_layout(vla: VLA, datamodule: VLADataModule) -> None:
    """Samples with other views, proprio or chunk size than the model was built for would be scored as noise
    (or fail deep in the forward pass): refuse them up front, naming both sides."""
    expected = data_layout(vla)
    actual = {"chunk_size": datamodule.chunk_size, "image_views": tuple(datamodule.image_views),
              "proprio": datamodule.proprio}
    if actual != expected:
        raise ValueError(f"The datamodule samples {actual}, but the checkpoint's model reads {expected}: build "
                         "VLADataModule with vla.eval.offline.data_layout(model) as its chunk_size/image_views/proprio")


def _accumulate(vla: VLA, batch: dict[str, Any], device: str, sums: dict[str, float]) -> None:
    """Add one batch's loss, correct/total action tokens and L1 (overall and per dataset) to ``sums``."""
    tensors = {key: batch[key].to(device) for key in ("pixel_values", "input_ids", "attention_mask", "labels")}
    out = vla(**tensors, proprio=batch["proprio"].to(device) if "proprio" in batch else None)
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


def _accumulate_chunks(vla: VLA, batch: dict[str, Any], device: str, sums: dict[str, dict[str, list[float]]]) -> None:
    """Add one batch's chunk loss and L1s to ``sums[""]`` (all rows) and ``sums[<dataset>]`` (its rows) as
    ``{metric: [weighted sum, weight]}``, with training's weights: batch size for the loss, real values for L1."""
    tensors = {key: batch[key].to(device)
               for key in ("pixel_values", "input_ids", "attention_mask", "action_mask", "actions")}
    out = vla(tensors["pixel_values"], tensors["input_ids"], tensors["attention_mask"],
              proprio=batch["proprio"].to(device) if "proprio" in batch else None,
              action_mask=tensors["action_mask"], actions=tensors["actions"])
    pad = batch["action_pad_mask"].to(device)
    batch_size = tensors["input_ids"].shape[0]
    _add_mean(sums[""], "loss", float(out.loss), batch_size)
    _add_chunk_l1(sums[""], vla.chunk_metrics(out, pad), out.actions.shape[-1])
    names = batch.get("dataset_name") or []
    for name in sorted(set(names)):
        rows = torch.tensor([i for i, n in enumerate(names) if n == name], device=out.actions.device)
        subset = ChunkOutput(loss=out.loss, predicted=out.predicted[rows], actions=out.actions[rows])
        _add_chunk_l1(sums[name], vla.chunk_metrics(subset, pad[rows]), out.actions.shape[-1])


def _add_chunk_l1(sums: dict[str, list[float]], metrics: Mapping[str, torch.Tensor], action_dim: int) -> None:
    """:meth:`VLA.chunk_metrics` of some rows, each L1 weighted by the real values it averages."""
    count = float(metrics["count"])
    _add_mean(sums, "l1", float(metrics["l1"]), count * action_dim)
    for i, value in enumerate(metrics["l1_per_dim"].tolist()):
        _add_mean(sums, f"l1/dim{i}", value, count)
    for k, (value, steps) in enumerate(zip(metrics["l1_per_step"].tolist(), metrics["count_per_step"].tolist())):
        _add_mean(sums, f"l1/t{k}", value, float(steps) * action_dim)


def _add_mean(sums: dict[str, list[float]], key: str, value: float, weight: float) -> None:
    """Running ``[weighted sum, weight]`` of ``key``, as training's ``MeanMetric`` keeps it."""
    total = sums.setdefault(key, [0.0, 0.0])
    total[0] += value * weight
    total[1] += weight


def _chunk_means(sums: Mapping[str, Mapping[str, list[float]]]) -> dict[str, float]:
    """Weighted means of every metric (0 where nothing real was seen); per dataset (``<dataset>/``) only for mixtures."""
    metrics = {key: _mean(total) for key, total in sums[""].items()}
    names = sorted(name for name in sums if name)
    if len(names) > 1:
        for name in names:
            metrics.update({f"{name}/{key}": _mean(total) for key, total in sums[name].items()})
    return metrics


def _mean(total: list[float]) -> float:
    return total[0] / total[1] if total[1] else 0.0


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
    ordered = [m for m in METRIC_NAMES if m in metrics] + sorted((k for k in metrics if k not in METRIC_NAMES),
                                                                 key=_table_order)
    for name in ordered:
        table.add_row(name, f"{metrics[name]:.4f}")
    (console or Console()).print(table)


def _table_order(name: str) -> tuple[str, int]:
    """Chunk breakdowns by number (``l1/t2`` before ``l1/t10``); every other name alphabetically."""
    match = re.fullmatch(r"(.*/(?:dim|t))(\d+)", name)
    return (match[1], int(match[2])) if match else (name, -1)
