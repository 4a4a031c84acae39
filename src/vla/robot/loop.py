"""The deployment loop: observe -> ``POST /act`` -> act, at a fixed control rate, until a step limit or a stop."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from vla.client import ActionSource
from vla.robot.base import Observation, Robot
from vla.robot.recording import EpisodeRecording, write_recording


def as_chunk(answer: np.ndarray) -> np.ndarray:
    """The server's answer as float64 [K, D]: one action [D] (OpenVLA) is a chunk of one.

    Non-finite values are refused: a NaN must never reach a motor.
    """
    chunk = np.asarray(answer, dtype=np.float64)
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or 0 in chunk.shape:
        raise ValueError(f"expected an action [D] or a chunk [K, D] from the server, got shape {list(np.shape(answer))}")
    if not np.all(np.isfinite(chunk)):
        raise ValueError(f"the server returned non-finite actions: {chunk.tolist()}")
    return chunk


class ControlLoop:
    """Drives ``robot`` with ``policy`` (a :class:`vla.client.PolicyClient`, or anything with ``act``).

    One step reads an observation, asks the policy when no queued action is left (with the whole
    observation: the client sends the inputs the served model takes; it then queues the first
    ``actions_per_query`` actions of the answer, None: the whole chunk), applies one action and sleeps out the rest of
    the ``1 / control_hz`` period; a step that runs longer is an overrun and the next step starts at
    once (no catch-up burst). :meth:`stop` is safe from any thread or a signal handler: the step in
    progress finishes, the robot is stopped and the recording written.
    """

    def __init__(self, policy: ActionSource, robot: Robot, instruction: str, control_hz: float = 5.0,
                 max_steps: int = 100, actions_per_query: int | None = None, unnorm_key: str | None = None):
        if not instruction:
            raise ValueError("instruction must be a non-empty string")
        if not control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        if max_steps < 1 or (actions_per_query is not None and actions_per_query < 1):
            raise ValueError(f"max_steps and actions_per_query must be >= 1, got {max_steps} and {actions_per_query}")
        self.policy, self.robot, self.instruction = policy, robot, instruction
        self.control_hz, self.max_steps, self.actions_per_query = control_hz, max_steps, actions_per_query
        self.unnorm_key = unnorm_key
        self.recordings: list[EpisodeRecording] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        """End after the current step (and start no further episode)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def run(self, episodes: int, out_dir: str | os.PathLike) -> list[Path]:
        """Up to ``episodes`` episodes, each recorded to ``out_dir`` even when it fails; returns the .npz paths."""
        paths = []
        for index in range(episodes):
            if self.stop_requested:
                break
            recording = EpisodeRecording(self.instruction, self.control_hz, self.actions_per_query)
            self.recordings.append(recording)
            try:
                self.run_episode(recording)
            finally:
                paths.append(write_recording(recording, out_dir, index))
        return paths

    def run_episode(self, recording: EpisodeRecording) -> None:
        """Reset, step until ``max_steps`` or a stop, and always stop the robot; fills ``recording``."""
        try:
            observation = self.robot.reset()
            recording.ended_by = self._steps(observation, recording)
        except BaseException as err:
            recording.ended_by = f"error: {type(err).__name__}: {err}"
            raise
        finally:
            self.robot.stop()

    def _steps(self, observation: Observation, recording: EpisodeRecording) -> str:
        period = 1.0 / self.control_hz
        queue: list[np.ndarray] = []
        episode_start = time.perf_counter()
        for step in range(self.max_steps):
            if self.stop_requested:
                return "stop"
            start = time.perf_counter()
            if step > 0:
                observation = self.robot.get_observation()
            latency = None
            if not queue:
                queue, latency = self._query(observation)
            action = queue.pop(0)
            self.robot.apply_action(action)
            recording.add_step(observation, action, latency, start - episode_start, time.perf_counter() - start)
            self._stop.wait(max(0.0, start + period - time.perf_counter()))
        return "max_steps"

    def _query(self, observation: Observation) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        answer = self.policy.act(observation, self.instruction, unnorm_key=self.unnorm_key)
        latency = time.perf_counter() - start
        chunk = as_chunk(answer)
        if self.actions_per_query is not None and self.actions_per_query > len(chunk):
            raise ValueError(f"actions_per_query={self.actions_per_query}, but the server answered {len(chunk)} action(s) "
                             "per query (a token model answers one): lower it or use null (the whole answer)")
        return list(chunk[: self.actions_per_query]), latency
