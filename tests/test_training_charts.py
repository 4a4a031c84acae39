"""Training curves (from metrics.csv) and the sweep chart: right points, readable PNGs, clear errors."""

from __future__ import annotations

import csv

import pytest

from vla.training.curves import read_curves, write_sweep_chart, write_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_log(path, rows):
    columns = sorted({key for row in rows for key in row})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def test_curves_read_train_steps_and_val_points_and_draw_them(tmp_path):
    log = tmp_path / "run" / "logs" / "metrics.csv"
    rows = [{"step": s, "epoch": 0, "train/loss_step": 3.0 - 0.1 * s, "train/action_accuracy_step": 0.01 * s}
            for s in range(10)]
    rows += [{"step": 4, "epoch": 0, "val/loss": 2.5, "val/action_accuracy": 0.1, "val/l1": 0.3},
             {"step": 9, "epoch": 0, "val/loss": 2.0, "val/action_accuracy": 0.2, "val/l1": 0.2}]
    _write_log(log, rows)
    curves = read_curves(log)
    assert curves["loss"]["train"][:2] == [(0, 3.0), (1, 2.9)] and len(curves["loss"]["train"]) == 10
    assert curves["loss"]["val"] == [(4, 2.5), (9, 2.0)] and curves["l1"] == {"val": [(4, 0.3), (9, 0.2)]}
    out = write_training_curves(log, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 10_000
    assert not list(tmp_path.glob(".curves.tmp*"))


def test_sweep_chart_has_a_bar_per_run(tmp_path):
    rows = [{"run": f"module.learning_rate={lr}", "val/loss": loss, "val/action_accuracy": acc, "val/l1": ""}
            for lr, loss, acc in ((1e-3, 2.0, 0.3), (3e-3, 1.5, 0.5))]
    small = write_sweep_chart(rows, tmp_path / "two.png").stat().st_size
    many = write_sweep_chart(rows * 6, tmp_path / "twelve.png").stat().st_size
    assert small > 5_000 and many > small


def test_nothing_to_draw_is_a_clear_error(tmp_path):
    log = tmp_path / "metrics.csv"
    _write_log(log, [{"step": 0, "epoch": 0, "lr-AdamW": 0.001}])
    with pytest.raises(ValueError, match="no train/val loss"):
        write_training_curves(log, tmp_path / "curves.png")
    with pytest.raises(ValueError, match="no run has any of"):
        write_sweep_chart([{"run": "a", "val/loss": ""}], tmp_path / "sweep.png")
