"""Gymnasium-style tabletop environment implementing the closed-loop eval interface (docs/contracts.md, "Environments")."""

from __future__ import annotations

from typing import Any

import numpy as np

from vla.sim.render import PRIMARY_CAMERA, render_view, wrist_camera
from vla.sim.scene import Scene, apply_action, sample_scene
from vla.sim.tasks import SimTask

ACTION_DIM = 7


class SimTabletopEnv:
    """One task (instruction) of the sim; `reset(seed)` lays out the scene the seed determines.

    Actions are unnormalized 7-D EEF_POS deltas [dx, dy, dz, droll, dpitch, dyaw, gripper] with
    gripper 1 = open, 0 = closed. An episode terminates on success and truncates at `max_steps`.
    """

    def __init__(
        self,
        task: SimTask,
        n_objects: int = 3,
        image_size: int = 224,
        wrist_image: bool = True,
        max_steps: int | None = None,
    ) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
        self.task = task
        self.n_objects = n_objects
        self.image_size = image_size
        self.wrist_image = wrist_image
        self.max_steps = task.max_steps if max_steps is None else max_steps
        self._scene: Scene | None = None
        self._steps = 0

    @property
    def language(self) -> str:
        return self.task.language

    @property
    def scene(self) -> Scene:
        """The privileged simulator state (used by the scripted expert, never by policies)."""
        if self._scene is None:
            raise RuntimeError("call reset() before using the environment")
        return self._scene

    def reset(self, seed: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Lay out the scene for `seed` (a random one if None) with the gripper open at home."""
        if seed is None:
            seed = int(np.random.default_rng().integers(0, 2**31))
        self._scene = sample_scene(int(seed), self.n_objects)
        self._steps = 0
        return self._observation(), self._info(success=False)

    def set_init_state(self, init_state: int) -> dict[str, np.ndarray]:
        """LIBERO-style alias: the sim's init states are seeds."""
        observation, _ = self.reset(seed=init_state)
        return observation

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        apply_action(self.scene, action)
        self._steps += 1
        success = self.task.is_success(self.scene)
        truncated = not success and self._steps >= self.max_steps
        return self._observation(), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        """The primary camera image, uint8 [image_size, image_size, 3]."""
        return render_view(self.scene, PRIMARY_CAMERA, self.image_size)

    def close(self) -> None:
        self._scene = None

    def _observation(self) -> dict[str, np.ndarray]:
        observation = {"image": self.render(), "state": self.scene.state()}
        if self.wrist_image:
            observation["wrist_image"] = render_view(self.scene, wrist_camera(self.scene), self.image_size)
        return observation

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "task": self.task.name, "language": self.language, "steps": self._steps}
