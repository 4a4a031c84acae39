"""LIBERO integration smoke test: the real libero package, one task, one trial, a few steps."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("libero.libero", reason="libero not installed (pip install -e '.[libero]')")

from vla.eval.envs.libero import LiberoSuite  # noqa: E402
from vla.eval.runner import evaluate  # noqa: E402


@pytest.mark.slow
def test_libero_rollout_smoke(tmp_path):
    suite = LiberoSuite("libero_spatial")
    task = suite.get_task(0)
    assert suite.n_tasks == 10 and task.max_steps == 220 and task.language
    seen = []

    def zero_policy(image: np.ndarray, instruction: str) -> np.ndarray:
        seen.append((image.shape, image.dtype, instruction))
        return np.array([0, 0, 0, 0, 0, 0, 1.0])

    results = evaluate(suite, zero_policy, tmp_path, num_trials_per_task=1, num_steps_wait=1, task_ids=[0],
                       max_steps=2, progress=False)
    record = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert record["error"] is None, record["error"]
    assert record["steps"] == 2 and record["success"] is False and results["suite"]["episodes"] == 1
    assert seen == [((256, 256, 3), np.uint8, task.language)] * 2
