"""LIBERO task suites behind the env interface (docs/contracts.md, "Environments"), through the real ``libero`` package API.

Reproduces OpenVLA's ``run_libero_eval.py``: ``OffScreenRenderEnv`` at 256x256 seeded with 0 once,
``reset()`` + ``set_init_state(suite init state i)`` per trial, the agent-view image rotated 180
degrees, and the gripper post-processing (``2x - 1``, sign, flip) applied to the policy's
0 = close / 1 = open gripper. The observation also carries what OpenVLA-OFT's LIBERO eval feeds its
chunk policies (``prepare_observation``): the wrist camera rotated 180 degrees like the agent view,
and the 8-D state EEF position (3) + axis-angle of the EEF quaternion (3) + the two gripper finger
joint positions (2), the layout of the LIBERO RLDS ``state``. Install with the ``[libero]`` extra and
set ``MUJOCO_GL=egl``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vla.eval.envs.base import Observation, TaskSpec

# OpenVLA's per-suite step budgets (longest training demo plus margin).
LIBERO_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERA_RESOLUTION = 256
ENV_SEED = 0  # OpenVLA seeds each env once; the seed also moves objects despite fixed init states


def libero_gripper_action(action: np.ndarray) -> np.ndarray:
    """Policy gripper (0 = close, 1 = open) -> LIBERO's (-1 = open, +1 = close), as OpenVLA does.

    ``normalize_gripper_action(binarize=True)`` maps to [-1, 1] and takes the sign (0 stays 0);
    ``invert_gripper_action`` flips it.
    """
    action = np.array(action, dtype=np.float64)
    if action.shape != (7,):
        raise ValueError(f"LIBERO expects a 7-D action, got shape {action.shape}")
    action[-1] = -np.sign(2.0 * action[-1] - 1.0)
    return action


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` -> axis-angle ``axis * angle`` (radians), robosuite's definition that OpenVLA-OFT uses.

    ``w`` is clipped to [-1, 1] first; when ``sqrt(1 - w^2)`` is exactly 0 (``w = +-1``: no rotation)
    the answer is 0. Computed in the quaternion's own dtype, as robosuite does; the input is not modified.
    """
    quat = np.array(quat)
    if quat.shape != (4,):
        raise ValueError(f"quaternion must have shape (4,), got {quat.shape}")
    quat[3] = np.clip(quat[3], -1.0, 1.0)
    sin_half = np.sqrt(1.0 - quat[3] * quat[3])
    if sin_half == 0.0:
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(quat[3]) / sin_half


def libero_observation(raw: Mapping[str, np.ndarray]) -> Observation:
    """A LIBERO env observation as OpenVLA(-OFT) feeds it to a policy (docs/contracts.md, "Environments").

    Both cameras rotated 180 degrees (``img[::-1, ::-1]``, to match the LIBERO training data) and the
    8-D state: EEF position (3), axis-angle of the EEF quaternion (3), the two gripper finger joints (2).
    """
    state = np.concatenate([raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]])
    if state.shape != (8,):
        raise ValueError(f"LIBERO state must be 8-D (eef_pos 3 + axis-angle 3 + gripper_qpos 2), got {state.shape}")
    return {
        "image": np.ascontiguousarray(raw["agentview_image"][::-1, ::-1]),
        "wrist_image": np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1]),
        "state": state.astype(np.float32),
    }


def _import_libero():
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as err:
        raise ImportError("LIBERO eval needs the libero package: pip install -e '.[libero]'") from err
    return benchmark, get_libero_path, OffScreenRenderEnv


class LiberoEnv:
    """One LIBERO task's ``OffScreenRenderEnv`` with the observations and actions of docs/contracts.md, "Environments"."""

    def __init__(self, bddl_file: str, resolution: int = CAMERA_RESOLUTION, seed: int = ENV_SEED):
        _, _, offscreen_env = _import_libero()
        self._env = offscreen_env(bddl_file_name=bddl_file, camera_heights=resolution, camera_widths=resolution)
        self._env.seed(seed)
        self._last_image: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> tuple[Observation, dict[str, Any]]:
        if seed is not None:
            self._env.seed(seed)
        return self._observe(self._env.reset()), {}

    def set_init_state(self, state: np.ndarray) -> Observation:
        return self._observe(self._env.set_init_state(state))

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        raw, reward, done, info = self._env.step(libero_gripper_action(action).tolist())
        return self._observe(raw), float(reward), bool(done), False, {**info, "success": bool(done)}

    def render(self) -> np.ndarray:
        if self._last_image is None:
            raise RuntimeError("render() before reset()")
        return self._last_image

    def close(self) -> None:
        self._env.close()

    def _observe(self, raw: dict[str, np.ndarray]) -> Observation:
        observation = libero_observation(raw)
        self._last_image = observation["image"]
        return observation


class LiberoSuite:
    """A LIBERO benchmark suite (``libero_spatial`` ... ``libero_90``) as a task suite (docs/contracts.md, "Environments")."""

    def __init__(self, name: str, resolution: int = CAMERA_RESOLUTION):
        if name not in LIBERO_MAX_STEPS:
            raise ValueError(f"Unknown LIBERO suite {name!r}; choose one of {sorted(LIBERO_MAX_STEPS)}")
        benchmark, get_libero_path, _ = _import_libero()
        self.name = name
        self.resolution = resolution
        self._suite = benchmark.get_benchmark_dict()[name]()
        self._bddl_root = get_libero_path("bddl_files")
        self.n_tasks = int(self._suite.n_tasks)

    def get_task(self, task_id: int) -> TaskSpec:
        task = self._suite.get_task(self._check(task_id))
        return TaskSpec(name=task.name, language=task.language, max_steps=LIBERO_MAX_STEPS[self.name])

    def get_task_init_states(self, task_id: int) -> list[np.ndarray]:
        return list(self._suite.get_task_init_states(self._check(task_id)))

    def make_env(self, task_id: int, **kwargs: Any) -> LiberoEnv:
        task = self._suite.get_task(self._check(task_id))
        bddl = os.path.join(self._bddl_root, task.problem_folder, task.bddl_file)
        return LiberoEnv(bddl, resolution=kwargs.pop("resolution", self.resolution), **kwargs)

    def _check(self, task_id: int) -> int:
        if not 0 <= task_id < self.n_tasks:
            raise ValueError(f"Task id {task_id} out of range for {self.name} ({self.n_tasks} tasks)")
        return task_id
