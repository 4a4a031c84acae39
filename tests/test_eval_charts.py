"""Success charts: eval writes success_by_task.png next to results.json; the chart function refuses bad input."""

from __future__ import annotations

import struct

import pytest

from tests.test_eval_rollout import LineSuite, go_policy
from vla.eval.charts import success_chart
from vla.eval.metrics import wilson_interval
from vla.eval.runner import evaluate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def row(successes: int, episodes: int) -> dict:
    low, high = wilson_interval(successes, episodes)
    return {"success_rate": successes / episodes, "ci95_low": low, "ci95_high": high, "successes": successes,
            "episodes": episodes}


def test_eval_writes_the_per_task_chart_next_to_results(tmp_path, capsys):
    evaluate(LineSuite(), go_policy, tmp_path, num_trials_per_task=3, num_steps_wait=0, progress=True)
    chart = tmp_path / "success_by_task.png"
    assert (tmp_path / "results.json").exists() and chart.exists()
    width, height = png_size(chart)
    assert 600 <= width <= 2000 and 200 <= height <= 1500  # 9 in x (0.55 in per bar + 1.6 in) at 120 dpi
    assert chart.stat().st_size > 5_000
    assert f"chart: {chart}" in capsys.readouterr().out
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_chart_grows_with_the_number_of_bars(tmp_path):
    """The bench's trained / language-blind / untrained chart, then a 10-task suite: taller, same width."""
    bench = {"trained": row(8, 20), "language-blind": row(4, 20), "untrained": row(0, 20)}
    small = success_chart(bench, tmp_path / "bench.png", "sim_push: 20 scenes x 2 tasks", reference=(0.5, "ceiling"))
    tasks = {f"{i}: pick_up_the_red_block_and_put_it_on_the_plate": row(i, 10) for i in range(10)}
    large = success_chart(tasks, tmp_path / "tasks.png", "ten tasks")
    (w_small, h_small), (w_large, h_large) = png_size(small), png_size(large)
    assert w_small == w_large and h_large > h_small


def test_wilson_rounding_at_zero_successes_is_charted(tmp_path):
    """wilson_interval(0, 3)'s lower bound is 5.6e-17, a hair above the 0.0 rate: still a valid bar."""
    assert row(0, 3)["ci95_low"] > 0.0
    png_size(success_chart({"stop": row(0, 3)}, tmp_path / "zero.png", "rounding"))


def test_chart_fails_clearly_on_empty_or_malformed_input(tmp_path):
    with pytest.raises(ValueError, match="no success rates to chart"):
        success_chart({}, tmp_path / "empty.png", "nothing")
    with pytest.raises(ValueError, match="lacks \\['ci95_low', 'ci95_high'"):
        success_chart({"a": {"success_rate": 0.5, "successes": 1, "episodes": 2}}, tmp_path / "bad.png", "bad")
    with pytest.raises(ValueError, match="ci95_low <= success_rate"):
        success_chart({"a": {**row(1, 2), "ci95_low": 0.9}}, tmp_path / "bad.png", "bad")
    assert list(tmp_path.iterdir()) == []
