"""Tabletop scene state and its kinematic physics (pure numpy, deterministic).

Units are metres and radians. The table spans [-TABLE_HALF, TABLE_HALF] in x (left -> right as seen
by the camera) and y (near -> far). Blocks are axis-aligned cubes resting on the table (z = bottom).
The physics is deliberately simple so a tiny policy can learn it from a few hundred demos:
- the gripper moves by clipped EEF deltas; orientation is tracked but does not affect contacts;
- a low gripper moving horizontally into a block pushes it just ahead of itself;
- closing the gripper around a block grasps it, opening releases it (it drops onto the table).
Blocks do not collide with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLE_HALF = 0.25
BLOCK_HALF = 0.025
BLOCK_HEIGHT = 0.04
PLATE_RADIUS = 0.055
GRIPPER_HALF = 0.015  # half-width of the gripper's footprint used for pushing
GRASP_RADIUS = 0.02  # max xy distance gripper <-> block centre for a grasp
GRASP_HEIGHT = 0.02  # fingertip height above the block bottom while holding it
MAX_TRANSLATION = 0.05  # per step and axis
MAX_ROTATION = 0.25  # per step and axis
Z_MIN, Z_MAX = 0.01, 0.2
HOME = np.array([0.0, -0.18, 0.15])

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
MIN_SEPARATION = 0.12  # between any two of blocks and plate, so targets are unambiguous
# |x| <= 0.13 leaves room to push a block 0.08 m either way without leaving the table.
_SPAWN_LOW = np.array([-0.13, -0.08])
_SPAWN_HIGH = np.array([0.13, 0.18])


@dataclass
class Scene:
    """Everything that changes during an episode; `initial_block_pos` lets tasks judge displacement."""

    colours: tuple[str, ...]
    block_pos: np.ndarray  # [n, 3] (x, y, bottom z)
    initial_block_pos: np.ndarray  # [n, 3]
    plate_xy: np.ndarray  # [2]
    gripper_pos: np.ndarray  # [3] fingertip position
    gripper_rpy: np.ndarray  # [3]
    gripper_opening: float  # 1 = open, 0 = closed
    held: int | None = None

    def block_index(self, colour: str) -> int:
        """Index of the block of the given colour (ValueError if absent)."""
        if colour not in self.colours:
            raise ValueError(f"no {colour!r} block in this scene (colours: {self.colours})")
        return self.colours.index(colour)

    def state(self) -> np.ndarray:
        """Proprio as in the RLDS contract: [x, y, z, roll, pitch, yaw, gripper_opening] float32."""
        return np.concatenate([self.gripper_pos, self.gripper_rpy, [self.gripper_opening]]).astype(np.float32)


def sample_scene(seed: int, n_objects: int) -> Scene:
    """Random non-overlapping layout of `n_objects` blocks (first colours of COLOURS) and a plate.

    The layout depends only on the seed, so every task of a suite sees the same scene for a seed.
    """
    if not 1 <= n_objects <= len(COLOURS):
        raise ValueError(f"n_objects must be in [1, {len(COLOURS)}], got {n_objects}")
    rng = np.random.default_rng(seed)
    points = _separated_points(rng, n_objects + 1)
    plate_xy, block_xy = points[0], points[1:]
    block_pos = np.concatenate([block_xy, np.zeros((n_objects, 1))], axis=1)
    gripper = HOME + np.concatenate([rng.uniform(-0.03, 0.03, size=2), [0.0]])
    return Scene(
        colours=tuple(list(COLOURS)[:n_objects]),
        block_pos=block_pos,
        initial_block_pos=block_pos.copy(),
        plate_xy=plate_xy,
        gripper_pos=gripper,
        gripper_rpy=np.zeros(3),
        gripper_opening=1.0,
    )


def _separated_points(rng: np.random.Generator, count: int, tries_per_layout: int = 500) -> np.ndarray:
    """Rejection-sample `count` spawn points at least MIN_SEPARATION apart (restarting if stuck)."""
    while True:
        points: list[np.ndarray] = []
        for _ in range(tries_per_layout):
            candidate = rng.uniform(_SPAWN_LOW, _SPAWN_HIGH)
            if all(np.linalg.norm(candidate - p) >= MIN_SEPARATION for p in points):
                points.append(candidate)
                if len(points) == count:
                    return np.stack(points)


def apply_action(scene: Scene, action: np.ndarray) -> None:
    """Advance the scene by one 7-D EEF_POS action (in place): move, push, grasp/release, carry."""
    delta = np.clip(action[:3], -MAX_TRANSLATION, MAX_TRANSLATION)
    low = np.array([-TABLE_HALF, -TABLE_HALF, Z_MIN])
    high = np.array([TABLE_HALF, TABLE_HALF, Z_MAX])
    previous_xy = scene.gripper_pos[:2].copy()
    scene.gripper_pos = np.clip(scene.gripper_pos + delta, low, high)
    rpy = scene.gripper_rpy + np.clip(action[3:6], -MAX_ROTATION, MAX_ROTATION)
    scene.gripper_rpy = (rpy + np.pi) % (2 * np.pi) - np.pi
    was_open = scene.gripper_opening >= 0.5
    scene.gripper_opening = float(np.clip(action[6], 0.0, 1.0))
    _push_blocks(scene, previous_xy, delta[:2])
    is_open = scene.gripper_opening >= 0.5
    if scene.held is None and was_open and not is_open:
        scene.held = _graspable_block(scene)
    elif scene.held is not None and is_open:
        scene.block_pos[scene.held] = (*scene.gripper_pos[:2], 0.0)  # drops straight down
        scene.held = None
    if scene.held is not None:
        x, y, z = scene.gripper_pos
        scene.block_pos[scene.held] = (x, y, max(z - GRASP_HEIGHT, 0.0))


def _push_blocks(scene: Scene, previous_xy: np.ndarray, delta_xy: np.ndarray) -> None:
    """A low gripper moving horizontally into a block shoves it ahead along the main motion axis.

    Fingers that were already around a block (lowered onto it for a grasp) leave it in place.
    """
    if scene.gripper_pos[2] >= BLOCK_HEIGHT or not np.any(delta_xy):
        return
    axis = int(np.argmax(np.abs(delta_xy)))
    reach = BLOCK_HALF + GRIPPER_HALF
    for i in range(len(scene.colours)):
        block_xy = scene.block_pos[i, :2]
        if i == scene.held or np.all(np.abs(block_xy - previous_xy) < BLOCK_HALF):
            continue
        if np.all(np.abs(block_xy - scene.gripper_pos[:2]) < reach):
            new_xy = block_xy.copy()
            new_xy[axis] = scene.gripper_pos[axis] + np.sign(delta_xy[axis]) * reach
            scene.block_pos[i, :2] = np.clip(new_xy, -TABLE_HALF + BLOCK_HALF, TABLE_HALF - BLOCK_HALF)


def _graspable_block(scene: Scene) -> int | None:
    """The block between the fingers when they close (low enough and centred), if any."""
    if scene.gripper_pos[2] > BLOCK_HEIGHT:
        return None
    distances = np.linalg.norm(scene.block_pos[:, :2] - scene.gripper_pos[:2], axis=1)
    nearest = int(np.argmin(distances))
    return nearest if distances[nearest] < GRASP_RADIUS else None
