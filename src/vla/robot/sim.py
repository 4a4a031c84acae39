"""The built-in sim as a :class:`vla.robot.base.Robot`: the deployment loop end to end without hardware."""

from __future__ import annotations

import numpy as np

from vla.robot.base import Observation
from vla.sim import EVAL_SEED_BASE, SimTaskSuite


class SimRobot:
    """One task of a sim suite; episode ``k`` lays out scene ``seed + k`` (held-out eval scenes by default).

    ``wrist_image`` also renders the wrist camera (for models with a wrist view; it costs a render per step).
    ``proprio_from_state`` reports the state in a training data's proprio layout, as a real robot driver
    does: ``state[i]`` per index, None a zero pad (``[0, 1, 2, 3, 4, 5, None, 6]``: the ``vla_sim`` 8-D proprio).

    ``instruction`` is the task's language, the loop's default. ``success`` says whether the task
    was achieved at any step of the current episode (a real robot cannot tell; the sim can).
    """

    def __init__(self, suite: str = "sim_reach", task_id: int = 0, n_objects: int = 3, image_size: int = 224,
                 seed: int = EVAL_SEED_BASE, wrist_image: bool = False,
                 proprio_from_state: list[int | None] | None = None):
        self.env = SimTaskSuite(suite, n_objects=n_objects).make_env(task_id, image_size=image_size,
                                                                     wrist_image=wrist_image)
        self.proprio_from_state = proprio_from_state
        self.instruction = self.env.language
        self.success = False
        self._next_seed = seed
        self._observation: Observation | None = None

    def reset(self) -> Observation:
        self._observation = self._as_reported(self.env.reset(seed=self._next_seed)[0])
        self._next_seed += 1
        self.success = False
        return self._observation

    def get_observation(self) -> Observation:
        if self._observation is None:
            raise RuntimeError("call reset() before get_observation()")
        return self._observation

    def apply_action(self, action: np.ndarray) -> None:
        observation, _, _, _, info = self.env.step(action)
        self._observation = self._as_reported(observation)
        self.success = self.success or bool(info["success"])

    def _as_reported(self, observation: Observation) -> Observation:
        if self.proprio_from_state is None:
            return observation
        state = observation["state"]
        layout = [np.float32(0) if i is None else state[i] for i in self.proprio_from_state]
        return {**observation, "state": np.array(layout, dtype=np.float32)}

    def stop(self) -> None:
        """The sim only moves inside ``apply_action``, so there is no motion to halt."""

    def close(self) -> None:
        self.env.close()
