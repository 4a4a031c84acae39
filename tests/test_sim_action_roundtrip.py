"""The closed loop's action path is lossless enough: a perfect VLA (one that emits the expert's own
action tokens) solves held-out sim tasks.

Rules out the loop (statistics, bounds_q99 (un)normalization, 256-bin tokenization, gripper
convention) as the reason a trained policy fails in closed loop; what is left is learning.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla.contract.normalization import normalize, unnormalize
from vla.data.statistics import compute_statistics
from vla.sim import SimTaskSuite
from vla.sim.expert import ScriptedExpert
from vla.sim.demos import episode_plan, record_episode
from vla.contract.action_tokenizer import ActionTokenizer

GRIPPER_NOT_NORMALIZED = [True] * 6 + [False]  # the sim's RLDS action mask (OpenVLA's convention)


def demo_statistics(suite: SimTaskSuite, episodes: int) -> dict:
    """Action statistics of scripted demos, computed the way data prep does."""
    actions = []
    for task_id, seed in episode_plan(episodes, seed=0, suite=suite):
        steps = record_episode(suite, task_id, seed, image_size=16, noise_std=0.002)
        actions.append(np.stack([step["action"] for step in steps]))
    return compute_statistics(actions, None, GRIPPER_NOT_NORMALIZED)["action"]


def through_tokens(action: np.ndarray, stats: dict, tokenizer: ActionTokenizer) -> np.ndarray:
    """What a VLA that predicts exactly the demo's tokens would send to the robot."""
    return unnormalize(tokenizer.decode(tokenizer.encode(normalize(action, stats))), stats)


@pytest.mark.parametrize("suite_name", ["sim_reach", "sim_all"])
def test_expert_actions_survive_normalization_and_tokenization(suite_name: str) -> None:
    suite = SimTaskSuite(suite_name, n_init_states=2)
    stats = demo_statistics(suite, episodes=2 * suite.n_tasks)
    tokenizer = ActionTokenizer()
    for task_id in range(suite.n_tasks):
        for seed in suite.get_task_init_states(task_id):
            env = suite.make_env(task_id, image_size=16, wrist_image=False)
            env.reset(seed=seed)
            expert = ScriptedExpert(noise_std=0.0)
            for _ in range(env.max_steps):
                _, _, terminated, truncated, info = env.step(through_tokens(expert.act(env.scene, env.task), stats, tokenizer))
                if terminated or truncated:
                    break
            assert info["success"], f"{env.language!r} on held-out scene {seed} fails through the token round trip"
