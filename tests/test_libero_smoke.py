"""LIBERO integration smoke test: the real libero package, one task, one trial, a few steps.

The rollout runs in a fresh interpreter: MuJoCo/robosuite and TensorFlow (imported in-process by
the data-prep tests) can crash each other inside one process, which is not how either is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("libero.libero", reason="libero not installed (pip install -e '.[libero]')")

SMOKE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from vla.eval.envs.libero import LiberoSuite
    from vla.eval.runner import evaluate

    out = Path(sys.argv[1])
    suite = LiberoSuite("libero_spatial")
    task = suite.get_task(0)
    seen = []

    def zero_policy(observation, instruction):
        image = observation["image"]
        seen.append([list(image.shape), str(image.dtype), instruction, list(observation["wrist_image"].shape),
                     list(observation["state"].shape)])
        return np.array([0, 0, 0, 0, 0, 0, 1.0])

    results = evaluate(suite, zero_policy, out, num_trials_per_task=1, num_steps_wait=1, task_ids=[0],
                       max_steps=2, progress=False)
    print(json.dumps({"n_tasks": suite.n_tasks, "max_steps": task.max_steps, "language": task.language,
                      "episodes": results["suite"]["episodes"], "seen": seen}))
""")


@pytest.mark.slow
def test_libero_rollout_smoke(tmp_path):
    env = dict(os.environ, MUJOCO_GL="egl")
    run = subprocess.run([sys.executable, "-c", SMOKE, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["n_tasks"] == 10 and summary["max_steps"] == 220 and summary["language"]
    record = json.loads((tmp_path / "episodes.jsonl").read_text())
    assert record["error"] is None, record["error"]
    assert record["steps"] == 2 and record["success"] is False and summary["episodes"] == 1
    # OpenVLA-OFT's inputs too: the wrist camera and the 8-D state (EEF pos, axis-angle, 2 finger joints).
    assert summary["seen"] == [[[256, 256, 3], "uint8", summary["language"], [256, 256, 3], [8]]] * 2
