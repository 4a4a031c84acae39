"""Offline evaluation: loss, action-token accuracy and L1 of a checkpoint on a split of prepared shards.

The numbers come from Lightning's validation loop over :class:`VLATrainingModule` and the
:class:`VLADataModule` loader, i.e. the very code that logs ``val/*`` during training, so a
checkpoint scored here on the data it was validated on reproduces what training logged.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from rich.console import Console
from rich.table import Table

from vla.data.datamodule import VLADataModule
from vla.models.vla import VLA
from vla.training.module import VLATrainingModule

RESULTS_FILE = "offline_metrics.json"
METRIC_NAMES = ("loss", "action_accuracy", "l1")
HARNESS_STAGE = "vla-full-train"  # only scores: which parameters would train does not matter


def evaluate_offline(vla: VLA, datamodule: VLADataModule, device: str = "cpu", precision: str = "32-true",
                     limit_batches: int | None = None) -> dict[str, float]:
    """``{"loss", "action_accuracy", "l1", "<dataset>/action_accuracy", ...}`` over the datamodule's val split.

    ``limit_batches`` scores only the first batches (training's ``trainer.limit_val_batches``);
    ``None`` scores the whole split.
    """
    if limit_batches is not None and limit_batches < 1:
        raise ValueError(f"limit_batches must be >= 1 or None (the whole split), got {limit_batches}")
    _warn_on_statistics_mismatch(vla.norm_stats, datamodule.dataset_statistics)
    datamodule.attach_processor(vla.processor)
    module = VLATrainingModule(vla, stage=HARNESS_STAGE)
    trainer = pl.Trainer(accelerator="cpu" if device == "cpu" else "gpu", devices=1, precision=precision,
                         limit_val_batches=limit_batches if limit_batches is not None else 1.0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {key.removeprefix("val/"): float(value) for key, value in logged.items()}


def _warn_on_statistics_mismatch(model_stats: Mapping[str, Any], data_stats: Mapping[str, Any]) -> None:
    """Shards are normalized with the data's statistics; a model trained on other ones sees shifted targets."""
    for name, stats in data_stats.items():
        if name not in model_stats:
            continue
        ours, theirs = model_stats[name]["action"], stats["action"]
        if not (np.allclose(ours["q01"], theirs["q01"]) and np.allclose(ours["q99"], theirs["q99"])):
            warnings.warn(f"The checkpoint's action statistics for {name!r} differ from the prepared data's: "
                          "the scores are against targets normalized differently from what the model learnt",
                          stacklevel=3)


def write_offline_results(out_dir: str | os.PathLike, metrics: Mapping[str, float],
                          settings: Mapping[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    path.write_text(json.dumps({"metrics": dict(metrics), "settings": dict(settings)}, indent=2))
    return path


def print_offline_table(metrics: Mapping[str, float], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("metric", "value"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    ordered = [m for m in METRIC_NAMES if m in metrics] + sorted(k for k in metrics if k not in METRIC_NAMES)
    for name in ordered:
        table.add_row(name, f"{metrics[name]:.4f}")
    (console or Console()).print(table)
