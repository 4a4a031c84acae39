"""Write and print eval results: results.json, results.csv, success_by_task.png and a rich table."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vla.atomic import write_json_atomic

from vla.eval.charts import success_chart
from vla.eval.metrics import SuccessRate

CSV_COLUMNS = ["scope", "task_id", "name", "successes", "episodes", "success_rate", "ci95_low", "ci95_high",
               "errors", "mean_steps", "mean_latency_s"]


def _row(rate: SuccessRate, scope: str) -> dict[str, Any]:
    return {"scope": scope, "task_id": rate.task_id, "name": rate.name, "successes": rate.successes,
            "episodes": rate.episodes, "success_rate": rate.rate, "ci95_low": rate.ci_low, "ci95_high": rate.ci_high,
            "errors": rate.errors, "mean_steps": rate.mean_steps, "mean_latency_s": rate.mean_latency_s}


def results_dict(tasks: list[SuccessRate], suite: SuccessRate, settings: dict[str, Any]) -> dict[str, Any]:
    return {"suite": _row(suite, "suite"), "tasks": [_row(t, "task") for t in tasks], "settings": settings}


def write_results(out_dir: str | os.PathLike, results: dict[str, Any]) -> None:
    out = Path(out_dir)
    write_json_atomic(out / "results.json", results)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(results["tasks"] + [results["suite"]])


CHART_FILE = "success_by_task.png"


def write_success_chart(out_dir: str | os.PathLike, results: dict[str, Any]) -> Path:
    """``success_by_task.png`` next to results.json: every task's rate and 95% interval, the suite total last."""
    suite = results["suite"]
    bars = {f"{task['task_id']}: {task['name']}": task for task in results["tasks"]}
    total = f"all tasks ({suite['name']})"
    bars[total] = suite
    trials = results["settings"].get("num_trials_per_task")
    title = f"{suite['name']}: success per task ({trials} trials each)" if trials else f"{suite['name']}: success per task"
    return success_chart(bars, Path(out_dir) / CHART_FILE, title, highlight=total)


def print_table(tasks: list[SuccessRate], suite: SuccessRate, console: Console | None = None) -> None:
    table = Table(title=f"Success rates: {suite.name}")
    for column in ("task", "name", "success", "episodes", "95% CI", "errors", "mean steps", "latency (s)"):
        table.add_column(column, justify="left" if column == "name" else "right", overflow="fold")
    for rate in [*tasks, suite]:
        table.add_row(
            "all" if rate.task_id is None else str(rate.task_id), rate.name, f"{rate.rate:.1%}", str(rate.episodes),
            f"[{rate.ci_low:.1%}, {rate.ci_high:.1%}]", str(rate.errors), f"{rate.mean_steps:.1f}",
            "-" if rate.mean_latency_s is None else f"{rate.mean_latency_s:.3f}",
            end_section=rate is tasks[-1] if tasks else False,
        )
    (console or Console()).print(table)
