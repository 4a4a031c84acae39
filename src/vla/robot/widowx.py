"""A Bridge V2 WidowX 250 arm for ``vla-robot robot=widowx``: the part users fill in.

This repository ships no hardware driver, so every method raises ``NotImplementedError`` naming
what to implement; nothing here pretends to move an arm. The settings mirror OpenVLA's real-robot
Bridge eval (``experiments/robot/bridge/`` of openvla/openvla: ``run_bridgev2_eval.py``,
``bridgev2_utils.py``, ``widowx_env.py``), which drives the arm through ``WidowXClient`` of
rail-berkeley/bridge_data_robot (``widowx_envs.widowx_env_service``):

- Server: the bridge_data_robot action server on ``host:port`` (``localhost:5556``), started with
  ``WidowXConfigs.DefaultEnvParams`` plus ``override_workspace_boundaries``, ``camera_topics`` and
  ``start_state`` (position + quaternion), then ``client.init(env_params)``.
- Observation: the main camera (``/blue/image_raw``) as uint8 RGB ``[256, 256, 3]`` (OpenVLA's
  ``WidowXGym`` with ``im_size=256`` turns the client's ``obs["image"]``, float CHW in [0, 1], into
  HWC uint8: ``(image.reshape(3, 256, 256).transpose(1, 2, 0) * 255).astype(uint8)``); ``state``:
  the 7-D EEF state padded to 8 as ``[state[:6], 0, state[-1]]``. Wait for a non-None observation.
- Action: the server's un-normalized 7-D EEF delta ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``
  (unnorm key ``bridge_orig``; gripper 1 = open, 0 = closed), sent as is with
  ``client.step_action(action, blocking=True)``.
- Timing: ``step_duration`` 0.2 s, i.e. ``control_hz=5``. Bridge data was collected non-blocking
  at 0.2 s and relabelled to look blocking, so OpenVLA evaluates with blocking moves; use 0.2 s
  if you switch to non-blocking control.
- Reset: ``client.reset()``, then move to the start pose with a blocking move
  (``client.move(transform, duration=0.8, blocking=True)``); a non-blocking reset leaves the
  controller's initial state wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla.robot.base import Observation

HOW_TO = "see the vla.robot.widowx module docstring for OpenVLA's Bridge settings"


@dataclass
class WidowXRobot:
    """Settings of OpenVLA's Bridge WidowX eval; implement the methods for your arm (each names its job)."""

    host: str = "localhost"
    port: int = 5556
    camera_topics: list[str] = field(default_factory=lambda: ["/blue/image_raw"])
    image_size: int = 256
    step_duration_s: float = 0.2
    blocking: bool = True
    init_ee_pos: list[float] = field(default_factory=lambda: [0.3, -0.09, 0.26])
    init_ee_quat: list[float] = field(default_factory=lambda: [0.0, -0.259, 0.0, -0.966])
    workspace_bounds: list[list[float]] = field(default_factory=lambda: [[0.1, -0.20, -0.01, -1.57, 0.0],
                                                                          [0.45, 0.25, 0.30, 1.57, 0.0]])

    def reset(self) -> Observation:
        """Connect on first use, move to the start pose (blocking), return the first observation."""
        raise NotImplementedError(
            "WidowXRobot.reset: connect a WidowXClient(host, port) (init it with the camera topics, workspace "
            "bounds and start_state = init_ee_pos + init_ee_quat), call client.reset(), move to the start pose "
            f"with a blocking move, then return get_observation(); {HOW_TO}")

    def get_observation(self) -> Observation:
        """The current main-camera image (uint8 [256, 256, 3] RGB) and the 8-D proprio state."""
        raise NotImplementedError(
            "WidowXRobot.get_observation: read client.get_observation() (retry while None) and return "
            f"{{'image': uint8 [{self.image_size}, {self.image_size}, 3] RGB from {self.camera_topics[0]}, "
            f"'state': float [8]}}; {HOW_TO}")

    def apply_action(self, action: np.ndarray) -> None:
        """Execute one 7-D EEF delta action; returns when the move is done (blocking control)."""
        raise NotImplementedError(
            "WidowXRobot.apply_action: send the 7-D EEF delta [dx, dy, dz, droll, dpitch, dyaw, gripper] with "
            f"client.step_action(action, blocking={self.blocking}) ({self.step_duration_s} s steps); {HOW_TO}")

    def stop(self) -> None:
        """Halt the arm where it is (called after every episode, on errors and on Ctrl-C)."""
        raise NotImplementedError(
            "WidowXRobot.stop: stop all motion and hold the current pose (no queued moves); it runs after "
            f"every episode, also on errors and Ctrl-C; {HOW_TO}")

    def close(self) -> None:
        """Release the WidowXClient connection."""
        raise NotImplementedError(f"WidowXRobot.close: stop and close the WidowXClient connection; {HOW_TO}")
