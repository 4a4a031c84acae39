"""The platform end to end, cheaply: train on sim demos -> offline scores -> closed-loop rollouts.

The long version (success well above the language-blind baseline) is bench/bench_closed_loop.py.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from tests.test_training import compose_train
from vla.data import VLADataModule
from vla.sim import SimTaskSuite
from vla.eval.offline import evaluate_offline
from vla.policy import Policy
from vla.eval.runner import evaluate
from vla.models import VLA, load_checkpoint
from vla.training.run import train

CHANCE_ACCURACY = 1 / 256


class LoggedSimSuite(SimTaskSuite):
    """A sim suite whose envs log what they are sent and answer, in order, into ``log``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.log: list[tuple] = []

    def make_env(self, task_id: int, **kwargs: Any):
        env = super().make_env(task_id, **kwargs)
        reset, step = env.reset, env.step

        def logged_reset(**options):
            obs, info = reset(**options)
            self.log.append(("obs", task_id, obs["image"].copy()))
            return obs, info

        def logged_step(action):
            self.log.append(("step", task_id, np.array(action)))
            result = step(action)
            self.log.append(("obs", task_id, result[0]["image"].copy()))
            return result

        env.reset, env.step = logged_reset, logged_step
        return env


def check_loop_wiring(log: list[tuple], suite: SimTaskSuite) -> int:
    """Each policy call sees the env's latest image and its task's instruction, and the env gets that call's action.

    Returns the number of policy calls.
    """
    latest: dict[str, Any] = {}
    calls = 0
    for kind, *event in log:
        if kind == "obs":
            latest = {"task": event[0], "image": event[1], "action": None}
        elif kind == "act":
            instruction, image, action = event
            assert np.array_equal(image, latest["image"]) and instruction == suite.get_task(latest["task"]).language
            latest["action"], calls = action, calls + 1
        else:
            assert event[0] == latest["task"] and latest["action"] is not None and np.array_equal(event[1], latest["action"])
    return calls


@pytest.mark.slow
def test_trained_tiny_vla_scores_far_above_chance_and_runs_closed_loop(tmp_path, sim_data_root):
    train(compose_train(tmp_path, sim_data_root, "trainer.max_steps=30", "trainer.val_check_interval=30",
                        "checkpoint_every_n_steps=30", "module.learning_rate=3e-3"))
    trained = load_checkpoint(tmp_path / "export")

    def val_scores(vla):
        datamodule = VLADataModule(sim_data_root, batch_size=8, num_workers=0)
        return evaluate_offline(vla, datamodule, limit_batches=4)

    torch.manual_seed(0)
    untrained = VLA(trained.config, norm_stats=trained.norm_stats)
    before, after = val_scores(untrained), val_scores(trained)
    assert after["action_accuracy"] > 50 * CHANCE_ACCURACY, after
    assert after["action_accuracy"] > before["action_accuracy"] + 0.2 and after["loss"] < 0.7 * before["loss"], (before, after)

    suite = LoggedSimSuite("sim_reach", n_init_states=2)
    policy = Policy(trained, preprocessing="openvla-eval", unnorm_key="vla_sim")

    def logged_policy(observation, instruction):
        action = policy(observation, instruction)
        suite.log.append(("act", instruction, observation["image"].copy(), np.array(action)))
        return action

    results = evaluate(suite, logged_policy, tmp_path / "closed_loop", num_trials_per_task=2, num_steps_wait=0,
                       max_steps=6, progress=False)
    records = [json.loads(line) for line in (tmp_path / "closed_loop" / "episodes.jsonl").read_text().splitlines()]
    assert results["suite"]["episodes"] == len(records) == suite.n_tasks * 2
    assert all(r["error"] is None and 1 <= r["steps"] <= 6 for r in records), records
    assert check_loop_wiring(suite.log, suite) == sum(r["steps"] for r in records)
    # Actions reach the env un-normalized: normalized dims inside the statistics' [q01, q99].
    stats = trained.norm_stats["vla_sim"]["action"]
    mask = np.asarray(stats["mask"])
    actions = np.stack([event[3] for event in suite.log if event[0] == "act"])
    assert actions.shape[1] == len(mask)
    assert np.all((actions[:, mask] >= np.asarray(stats["q01"])[mask]) & (actions[:, mask] <= np.asarray(stats["q99"])[mask]))
