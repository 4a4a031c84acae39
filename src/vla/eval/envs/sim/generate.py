"""Scripted demo generator: `python -m vla.eval.envs.sim.generate out=<dir> episodes=N [seed=0 ...]`.

Writes the RLDS dataset `vla_sim` (contract S1). Deterministic: the same parameters give the same
episodes. Training code calls `generate_rlds`, which skips the work if the dataset already exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from vla.eval.envs.sim.expert import ScriptedExpert
from vla.eval.envs.sim.suite import EVAL_SEED_BASE, SimTaskSuite

DATASET_NAME = "vla_sim"
VERSION = "1.0.0"


@dataclass
class GenerateConfig:
    """Command-line parameters (`key=value`); `out` is required."""

    out: str = "???"
    episodes: int = 200
    seed: int = 0
    image_size: int = 224
    val_fraction: float = 0.1
    suite: str = "sim_all"
    n_objects: int = 3
    noise_std: float = 0.002
    paired: bool = False


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


def generate_rlds(
    out_dir: str | Path,
    episodes: int = 200,
    seed: int = 0,
    image_size: int = 224,
    suite: str = "sim_all",
    val_fraction: float = 0.1,
    n_objects: int = 3,
    noise_std: float = 0.002,
    paired: bool = False,
    progress: bool = True,
) -> Path:
    """Write `<out_dir>/vla_sim/1.0.0/` (train + val) unless it already exists with these parameters.

    Returns `out_dir`, the tfds data dir that holds `vla_sim/`. With ``paired`` scenes the val split
    starts at a scene boundary, so no val scene is also a training scene.
    """
    params = {"episodes": episodes, "seed": seed, "image_size": image_size, "val_fraction": val_fraction,
              "suite": suite, "n_objects": n_objects, "noise_std": noise_std, "paired": paired}
    task_suite = SimTaskSuite(suite, n_objects=n_objects)
    n_val = _validated_val_count(episodes, val_fraction, task_suite.n_tasks if paired else 1)
    out_dir = Path(out_dir)
    existing = _existing_params(out_dir)
    if existing is not None:
        if existing != params:
            raise ValueError(f"{out_dir / DATASET_NAME} already holds a dataset generated with {existing}, not {params}; "
                             "use another out dir or delete it")
        return out_dir
    plan = episode_plan(episodes, seed, task_suite, paired)
    bar = tqdm(total=episodes, desc="sim demos", unit="episode", disable=not progress)

    def episodes_of(split: str, indices: range):
        def make() -> Iterator[dict[str, Any]]:
            for index, global_index in enumerate(indices):
                task_id, scene_seed = plan[global_index]
                steps = record_episode(task_suite, task_id, scene_seed, image_size, noise_std)
                bar.update(1)
                yield {
                    "steps": steps,
                    "episode_metadata": {
                        "file_path": f"{DATASET_NAME}/{split}/episode_{index:06d}",
                        "episode_id": f"{split}_{index:06d}",
                        "task_id": np.int32(task_id),
                        "seed": np.int64(scene_seed),
                    },
                }
        return make

    from vla.eval.envs.sim.rlds_writer import write_rlds  # TensorFlow only when actually writing

    split_episodes = {
        "train": episodes_of("train", range(episodes - n_val)),
        "val": episodes_of("val", range(episodes - n_val, episodes)),
    }
    with bar:
        write_rlds(out_dir, image_size, split_episodes, params)
    return out_dir


def _validated_val_count(episodes: int, val_fraction: float, scene_group: int = 1) -> int:
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
    return {**_LATER_PARAMS, **json.loads((version_dir / "metadata.json").read_text())}


def _existing_params(out_dir: Path) -> dict[str, Any] | None:
    """Generation parameters of a complete dataset in `out_dir` (tfds renames it into place when done)."""
    version_dir = out_dir / DATASET_NAME / VERSION
    if not (version_dir / "dataset_info.json").is_file():
        return None
    if not (version_dir / "metadata.json").is_file():
        raise ValueError(f"{version_dir} is a vla_sim dataset without generation metadata; use another out dir")
    return recorded_params(version_dir)


def main(argv: list[str]) -> Path:
    config = OmegaConf.merge(OmegaConf.structured(GenerateConfig), OmegaConf.from_cli(argv))
    if OmegaConf.is_missing(config, "out"):
        raise ValueError("out=<dir> is required")
    kwargs = OmegaConf.to_container(config)
    out_dir = generate_rlds(kwargs.pop("out"), **kwargs)
    print(f"vla_sim written to {out_dir / DATASET_NAME / VERSION}")
    return out_dir


if __name__ == "__main__":
    main(sys.argv[1:])
