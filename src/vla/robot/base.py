"""The robot interface the deployment loop drives: real hardware and the sim look the same to it."""

from __future__ import annotations

from typing import Protocol

import numpy as np

Observation = dict[str, np.ndarray]
"""``{"image": uint8 [H, W, 3] (primary camera, RGB), "wrist_image": uint8 [H, W, 3] (optional wrist camera),
"state": float array (optional proprio, in the layout of the model's training data)}``; the loop sends the
server what its model takes."""


class Robot(Protocol):
    """What ``vla-robot`` needs from a robot; every call may block (a real arm moves at its own pace).

    ``apply_action`` takes one un-normalized action as the server returns it, or one step of a chunk
    (for Bridge / the sim: 7-D ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``, gripper 1 = open). ``stop`` must leave the
    robot safe (hold position, no motion queued); the loop calls it after every episode, also on
    errors and Ctrl-C. ``close`` releases connections once all episodes are done.
    """

    def reset(self) -> Observation: ...

    def get_observation(self) -> Observation: ...

    def apply_action(self, action: np.ndarray) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...
