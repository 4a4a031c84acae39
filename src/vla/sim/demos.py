"""What a sim demo dataset is: the episode plan, expert rollouts and the recorded generation parameters.

No TensorFlow here: ``data_prep.sim_rlds`` writes these episodes as the RLDS dataset ``vla_sim``
(format: docs/contracts.md, "Sim demos (RLDS)"), and training reads the recorded parameters to
decide whether existing demos can be reused. Deterministic: the same parameters give the same episodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vla.sim.expert import ScriptedExpert
from vla.sim.suite import EVAL_SEED_BASE, SimTaskSuite

DATASET_NAME = "vla_sim"
VERSION = "1.0.0"
METADATA_FILE = "metadata.json"


# Generation parameters added after datasets were first written, with the value those datasets used.
_LATER_PARAMS = {"paired": False}


def episode_plan(episodes: int, seed: int, suite: SimTaskSuite, paired: bool = False) -> list[tuple[int, int]]:
    """(task_id, scene_seed) per episode: tasks round-robin, scene seeds below the eval range.

    ``paired``: each run of ``n_tasks`` consecutive episodes shares one scene, so the same image is
    demonstrated with every instruction. The contrast (same scene, other words, other actions) is
    what teaches a small model from scratch that the instruction matters.
    """
    scene_seeds = np.random.default_rng(seed).integers(0, EVAL_SEED_BASE, size=episodes)
    if paired:
        scene_seeds = scene_seeds[np.arange(episodes) // suite.n_tasks]
    return [(i % suite.n_tasks, int(scene_seed)) for i, scene_seed in enumerate(scene_seeds)]


def record_episode(
    suite: SimTaskSuite, task_id: int, scene_seed: int, image_size: int, noise_std: float
) -> list[dict[str, Any]]:
    """Roll out the scripted expert; RLDS steps (observation before the step's action)."""
    env = suite.make_env(task_id, image_size=image_size, wrist_image=True)
    expert = ScriptedExpert(noise_std=noise_std, seed=scene_seed)
    observation, info = env.reset(seed=scene_seed)
    steps = []
    for t in range(env.max_steps):
        action = expert.act(env.scene, env.task)
        next_observation, reward, terminated, truncated, info = env.step(action)
        steps.append({
            "observation": observation,  # image, wrist_image, state
            "action": action,
            "language_instruction": env.language,
            "is_first": t == 0,
            "is_last": terminated or truncated,
            "is_terminal": terminated,
            "reward": np.float32(reward),
            "discount": np.float32(1.0),
        })
        if terminated or truncated:
            break
        observation = next_observation
    if not info["success"]:
        raise RuntimeError(f"scripted expert failed task {env.task.name!r} on scene seed {scene_seed}")
    return steps


def validated_val_count(episodes: int, val_fraction: float, scene_group: int = 1) -> int:
    """Val episodes: the last ``val_fraction`` of them, extended back to a multiple of ``scene_group``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if episodes < 2 * scene_group:
        raise ValueError(f"episodes must be >= {2 * scene_group} (train and val both need a scene), got {episodes}")
    n_val = min(max(1, round(episodes * val_fraction)), episodes - 1)
    n_train = max(scene_group, (episodes - n_val) // scene_group * scene_group)
    return episodes - n_train


def recorded_params(version_dir: Path) -> dict[str, Any]:
    """Generation parameters recorded with a dataset (parameters added since then: their old value)."""
    return {**_LATER_PARAMS, **json.loads((version_dir / METADATA_FILE).read_text())}


