"""Success-rate charts with 95% Wilson intervals: what a person looks at before reading results.json.

Drawn on matplotlib's Agg canvas directly (no pyplot), so no display is needed and no global
backend is switched in the process that imports this.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from vla.atomic import atomic_write

ROW_KEYS = ("success_rate", "ci95_low", "ci95_high", "successes", "episodes")
TEXT_X = 1.03  # the column of numbers, right of the 100% line
LABEL_WIDTH = 30
TOLERANCE = 1e-9  # Wilson bounds carry float rounding: 0/n can give ci95_low = 5.6e-17 > 0.0


def success_chart(bars: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, title: str,
                  highlight: str | None = None, reference: tuple[float, str] | None = None) -> Path:
    """Horizontal bars, top to bottom in ``bars`` order, each with its interval and ``k/n`` written out.

    ``bars`` maps a label to a results row (``results.json``'s ``success_rate``, ``ci95_low``,
    ``ci95_high``, ``successes``, ``episodes``). ``highlight`` names a bar drawn darker (the suite
    total); ``reference`` = (rate, label) draws a dashed line (e.g. a baseline's ceiling).
    Returns ``path``, written as a PNG once complete.
    """
    if not bars:
        raise ValueError(f"no success rates to chart for {path}: got an empty mapping")
    for label, row in bars.items():
        _check_row(label, row)
    figure = Figure(figsize=(9.0, 0.55 * len(bars) + 1.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    _draw_bars(axes, bars, highlight)
    if reference is not None:
        axes.axvline(reference[0], color="tab:red", linestyle="--", linewidth=1.2, label=reference[1])
        axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)  # above the plot
    axes.set_title(title, fontsize=11)
    axes.set_xlim(0.0, 1.2)
    axes.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("success rate (error bars: 95% Wilson interval)")
    axes.axvline(1.0, color="0.8", linewidth=0.8)
    axes.grid(axis="x", color="0.92")
    axes.set_axisbelow(True)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def _check_row(label: str, row: Mapping[str, Any]) -> None:
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"bar {label!r} lacks {missing}; expected a results row with {list(ROW_KEYS)}")
    low, rate, high = row["ci95_low"], row["success_rate"], row["ci95_high"]
    if not (-TOLERANCE <= low <= rate + TOLERANCE and rate - TOLERANCE <= high <= 1.0 + TOLERANCE):
        raise ValueError(f"bar {label!r}: need 0 <= ci95_low <= success_rate <= ci95_high <= 1, got {dict(row)}")


def _draw_bars(axes: Any, bars: Mapping[str, Mapping[str, Any]], highlight: str | None) -> None:
    rows = list(bars.values())
    positions = list(range(len(rows)))[::-1]  # first bar on top
    rates = [row["success_rate"] for row in rows]
    errors = [[max(0.0, row["success_rate"] - row["ci95_low"]) for row in rows],
              [max(0.0, row["ci95_high"] - row["success_rate"]) for row in rows]]
    colours = ["tab:gray" if label == highlight else "tab:blue" for label in bars]
    axes.barh(positions, rates, height=0.6, color=colours, xerr=errors, capsize=4, error_kw={"elinewidth": 1.2})
    axes.set_yticks(positions, [textwrap.fill(label.replace("_", " "), LABEL_WIDTH) for label in bars], fontsize=9)
    for y, row in zip(positions, rows):
        axes.text(TEXT_X, y, f"{row['success_rate']:.0%}  ({row['successes']}/{row['episodes']})\n"
                             f"[{row['ci95_low']:.0%}, {row['ci95_high']:.0%}]", va="center", fontsize=8)
