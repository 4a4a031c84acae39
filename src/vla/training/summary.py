"""One table of final metrics per run after a ``--multirun`` sweep (CSV + markdown) and one chart (PNG)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vla.training.curves import write_sweep_chart

SUMMARY_METRICS = ("global_step", "train/loss_epoch", "train/action_accuracy_epoch", "val/loss", "val/action_accuracy", "val/l1")


def summarize_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rows of {run, metrics...} from every ``<sweep_dir>/*/metrics.json``; writes summary.csv/.md/.png."""
    runs = [json.loads(f.read_text()) for f in sorted(sweep_dir.glob("*/metrics.json"), key=lambda f: (len(f.parent.name), f.parent.name))]
    if not runs:
        return []
    # Name each run by the overrides that differ between runs (what the sweep varied).
    shared = set.intersection(*(set(m.get("overrides", [])) for m in runs))
    rows = [{"run": " ".join(o for o in m.get("overrides", []) if o not in shared),
             **{k: m.get(k, "") for k in SUMMARY_METRICS}} for m in runs]
    columns = ["run", *SUMMARY_METRICS]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    if any(isinstance(row.get("val/loss"), float) for row in rows):
        write_sweep_chart(rows, sweep_dir / "summary.png")
    return rows


class MultirunSummary(Callback):
    """Hydra callback: after the last job of a sweep, write and print the summary table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if summarize_sweep(sweep_dir):
            chart = sweep_dir / "summary.png"
            print(f"\nSweep summary ({sweep_dir / 'summary.csv'}):\n{(sweep_dir / 'summary.md').read_text()}"
                  + (f"chart: {chart}\n" if chart.is_file() else ""))
