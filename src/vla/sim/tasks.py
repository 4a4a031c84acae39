"""Language-conditioned task families of the sim and their success predicates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla.sim.scene import PLATE_RADIUS, Scene

REACH_RADIUS = 0.03
REACH_MAX_Z = 0.07  # below the expert's cruise height, so passing over a block is no success
PUSH_DISTANCE = 0.08
FAMILIES = ("reach", "push", "pick_place")
DIRECTIONS = {"left": -1.0, "right": 1.0}  # sign along the camera's x axis
MAX_STEPS = {"reach": 30, "push": 40, "pick_place": 50}


@dataclass(frozen=True)
class SimTask:
    """One instruction; `target` is a block colour, `direction` is used by the push family only."""

    family: str
    target: str
    direction: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown task family {self.family!r}; expected one of {FAMILIES}")
        if (self.family == "push") != (self.direction in DIRECTIONS):
            raise ValueError(f"push tasks need a direction in {tuple(DIRECTIONS)}, others none; got {self}")

    @property
    def language(self) -> str:
        if self.family == "reach":
            return f"move to the {self.target} block"
        if self.family == "push":
            return f"push the {self.target} block to the {self.direction}"
        return f"pick up the {self.target} block and put it on the plate"

    @property
    def name(self) -> str:
        return self.language.replace(" ", "_")

    @property
    def max_steps(self) -> int:
        return MAX_STEPS[self.family]

    def is_success(self, scene: Scene) -> bool:
        block = scene.block_index(self.target)
        xy, z = scene.block_pos[block, :2], scene.block_pos[block, 2]
        if self.family == "reach":
            gripper = scene.gripper_pos
            return bool(np.linalg.norm(gripper[:2] - xy) < REACH_RADIUS and gripper[2] < REACH_MAX_Z)
        if scene.held == block:
            return False
        if self.family == "push":
            moved = (xy[0] - scene.initial_block_pos[block, 0]) * DIRECTIONS[self.direction]
            return bool(moved >= PUSH_DISTANCE)
        return bool(z == 0.0 and np.linalg.norm(xy - scene.plate_xy) < PLATE_RADIUS)


def build_tasks(families: tuple[str, ...], colours: tuple[str, ...]) -> list[SimTask]:
    """Every (family, colour[, direction]) combination, family-major, in a fixed order."""
    tasks = []
    for family in families:
        for colour in colours:
            directions = tuple(DIRECTIONS) if family == "push" else (None,)
            tasks.extend(SimTask(family, colour, direction) for direction in directions)
    return tasks
