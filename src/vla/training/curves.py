"""Charts of a training run and of a sweep, for people who would rather look than read.

``curves.png``: loss, action-token accuracy and L1 against the optimizer step, train and val, from
the run's ``metrics.csv`` (continuous across a resume: the CSV logger continues the interrupted
run's file). ``summary.png``: one bar per run of a multirun, for the final val metrics. Drawn on
matplotlib's Agg canvas (no display, no global backend switch) and written atomically.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vla.atomic import atomic_write

CURVE_METRICS = (("loss", "loss"), ("action_accuracy", "action-token accuracy"), ("l1", "L1 (normalized actions)"))
# metrics.csv columns per split: the per-step train value and the per-validation value.
_COLUMNS = {"train": "train/{}_step", "val": "val/{}"}


def read_curves(metrics_csv: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{metric: {"train"|"val": [(step, value), ...]}}`` from a Lightning CSV log (empty cells skipped)."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for metric, _ in CURVE_METRICS:
        for split, column in _COLUMNS.items():
            points = [(int(row["step"]), float(row[column.format(metric)])) for row in rows
                      if row.get(column.format(metric)) not in (None, "") and row.get("step") not in (None, "")]
            if points:
                curves.setdefault(metric, {})[split] = points
    return curves


def write_training_curves(metrics_csv: Path, out: Path,
                          curves: dict[str, dict[str, list[tuple[int, float]]]] | None = None) -> Path:
    """``out`` (PNG): one panel per metric, train and val lines against the step (``curves``: already read
    from ``metrics_csv`` by :func:`read_curves`)."""
    curves = read_curves(metrics_csv) if curves is None else curves
    if not curves:
        raise ValueError(f"{metrics_csv} has no train/val loss, accuracy or L1 values to plot")
    panels = [(metric, title) for metric, title in CURVE_METRICS if metric in curves]
    figure = Figure(figsize=(4.2 * len(panels), 3.4), dpi=110)
    FigureCanvasAgg(figure)
    for index, (metric, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for split, style in (("train", {"linewidth": 1.0, "alpha": 0.8}), ("val", {"marker": "o", "linewidth": 1.6})):
            if split in curves[metric]:
                steps, values = zip(*curves[metric][split])
                axes.plot(steps, values, label=split, **style)
        axes.set_title(title)
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"training curves: {metrics_csv.parent.parent.name}")
    figure.tight_layout()
    return atomic_write(out, lambda tmp: figure.savefig(tmp, format="png"))


def write_sweep_chart(rows: Sequence[Mapping[str, Any]], out: Path,
                      metrics: Sequence[str] = ("val/loss", "val/action_accuracy", "val/l1")) -> Path:
    """``out`` (PNG): for each metric, one horizontal bar per run (rows as in ``summary.csv``)."""
    shown = [m for m in metrics if any(isinstance(row.get(m), float) and math.isfinite(row[m]) for row in rows)]
    if not rows or not shown:
        raise ValueError(f"no run has any of {list(metrics)} to chart")
    labels = [str(row["run"]) or f"run {i}" for i, row in enumerate(rows)]
    figure = Figure(figsize=(4.2 * len(shown), 0.45 * len(rows) + 1.6), dpi=110)
    FigureCanvasAgg(figure)
    for index, metric in enumerate(shown, start=1):
        axes = figure.add_subplot(1, len(shown), index)
        values = [row[metric] if isinstance(row.get(metric), float) else math.nan for row in rows]
        axes.barh(range(len(rows)), values, color="tab:blue")
        axes.set_yticks(range(len(rows)), labels if index == 1 else [""] * len(rows))
        axes.invert_yaxis()
        axes.set_title(metric)
        axes.grid(axis="x", alpha=0.3)
        for y, value in enumerate(values):
            if math.isfinite(value):
                axes.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    figure.suptitle("sweep: final metrics per run")
    figure.tight_layout()
    return atomic_write(out, lambda tmp: figure.savefig(tmp, format="png"))
