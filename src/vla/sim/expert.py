"""Scripted expert: a reactive controller on the privileged scene state that solves every task.

It is stateless (each action depends only on the current scene), so demos stay consistent and
it recovers from its own action noise. Rotations stay zero; gripper commands are exactly 0 or 1.
"""

from __future__ import annotations

import numpy as np

from vla.sim.scene import BLOCK_HEIGHT, GRASP_HEIGHT, Scene
from vla.sim.tasks import DIRECTIONS, SimTask

EXPERT_STEP = 0.04  # per axis; below the env's MAX_TRANSLATION so the expert never saturates it
CRUISE_Z = 0.08  # travel height, above every block
REACH_Z = 0.05
PUSH_Z = 0.02
PUSH_START_OFFSET = 0.07  # where the gripper lowers behind a block before pushing
ALIGN_TOLERANCE = 0.01
CORRECT_TOLERANCE = 0.03  # misalignments below this are fixed at the current height


class ScriptedExpert:
    """`act(scene, task)` -> 7-D action; Gaussian noise (std `noise_std` m) on the translation."""

    def __init__(self, noise_std: float = 0.002, seed: int = 0) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = noise_std
        self._rng = np.random.default_rng(seed)

    def act(self, scene: Scene, task: SimTask) -> np.ndarray:
        target_xyz, gripper = _plan(scene, task)
        translation = np.clip(target_xyz - scene.gripper_pos, -EXPERT_STEP, EXPERT_STEP)
        if self.noise_std:
            translation = translation + self._rng.normal(0.0, self.noise_std, size=3)
        return np.concatenate([translation, np.zeros(3), [gripper]]).astype(np.float32)


def _plan(scene: Scene, task: SimTask) -> tuple[np.ndarray, float]:
    """Where the fingertips should go next and the gripper command for the task's current phase."""
    block = scene.block_index(task.target)
    block_xy = scene.block_pos[block, :2]
    if task.family == "reach":
        return _reach(scene, block_xy), 1.0
    if task.family == "push":
        return _push(scene, block_xy, DIRECTIONS[task.direction]), 1.0
    if scene.held == block:
        if np.linalg.norm(scene.gripper_pos[:2] - scene.plate_xy) <= ALIGN_TOLERANCE:
            return scene.gripper_pos.copy(), 1.0  # over the plate: let go
        return _approach(scene, scene.plate_xy, CRUISE_Z), 0.0
    if scene.gripper_opening < 0.5 or scene.held is not None:
        return scene.gripper_pos.copy(), 1.0  # a missed grasp: open before trying again
    aligned = np.linalg.norm(scene.gripper_pos[:2] - block_xy) <= ALIGN_TOLERANCE
    if aligned and scene.gripper_pos[2] <= GRASP_HEIGHT + 0.005:
        return scene.gripper_pos.copy(), 0.0
    return _approach(scene, block_xy, GRASP_HEIGHT), 1.0


def _approach(scene: Scene, goal_xy: np.ndarray, final_z: float) -> np.ndarray:
    """Travel at cruise height (lifting first if low), then descend once aligned over the goal."""
    position = scene.gripper_pos
    distance = np.linalg.norm(position[:2] - goal_xy)
    if distance <= ALIGN_TOLERANCE:
        return np.array([goal_xy[0], goal_xy[1], final_z])
    if distance <= CORRECT_TOLERANCE:
        return np.array([goal_xy[0], goal_xy[1], position[2]])
    if position[2] < CRUISE_Z - 0.01:
        return np.array([position[0], position[1], CRUISE_Z])
    return np.array([goal_xy[0], goal_xy[1], CRUISE_Z])


def _reach(scene: Scene, block_xy: np.ndarray) -> np.ndarray:
    """Like `_approach`, but lowers while centring as soon as the block is within the success radius.

    The descent then depends on coarse closeness (the success radius, ~10 px at 224 px) rather than on
    1 cm alignment (~4 px in the oblique camera), so demos ask no more precision than success does.
    """
    if np.linalg.norm(scene.gripper_pos[:2] - block_xy) <= CORRECT_TOLERANCE:
        return np.array([block_xy[0], block_xy[1], REACH_Z])
    return _approach(scene, block_xy, REACH_Z)


def _push(scene: Scene, block_xy: np.ndarray, direction: float) -> np.ndarray:
    """Lower behind the block, then sweep along the direction while keeping it centred."""
    position = scene.gripper_pos
    along = (position[0] - block_xy[0]) * direction
    behind = -PUSH_START_OFFSET - 0.02 < along < -0.03 and abs(position[1] - block_xy[1]) < 0.015
    if position[2] < BLOCK_HEIGHT and behind:
        return np.array([position[0] + direction * EXPERT_STEP, block_xy[1], PUSH_Z])
    start = np.array([block_xy[0] - direction * PUSH_START_OFFSET, block_xy[1]])
    return _approach(scene, start, PUSH_Z)
