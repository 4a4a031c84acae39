"""One closed-loop episode: settle with no-ops, then policy steps until success or the step budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla.eval.envs.base import ActFn, Env, Observation, Task

# "Hold still, gripper open" in the policy's convention; LIBERO's adapter turns it into OpenVLA's
# dummy action [0, 0, 0, 0, 0, 0, -1].
NOOP_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


@dataclass
class Episode:
    """What happened in one rollout; ``error`` is the env exception that ended it early, if any."""

    success: bool = False
    steps: int = 0
    latencies_s: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    error: str | None = None

    @property
    def mean_latency_s(self) -> float | None:
        return float(np.mean(self.latencies_s)) if self.latencies_s else None


class EnvError(RuntimeError):
    """An exception raised inside the env (not the policy); the episode counts as failed."""


def start_episode(env: Env, init_state: Any) -> Observation:
    """Put the task's init state in place: sim states are seeds, LIBERO states are MuJoCo states."""
    if isinstance(init_state, (int, np.integer)):
        return env.reset(seed=int(init_state))[0]
    env.reset()
    return env.set_init_state(init_state)


def run_episode(env: Env, policy: ActFn, task: Task, init_state: Any, num_steps_wait: int = 10,
                record_frames: bool = False, max_steps: int | None = None) -> Episode:
    """Roll out ``policy`` on ``task`` for ``max_steps`` (default: the task's budget) policy steps.

    Env exceptions end the episode as a failure with the error.
    """
    max_steps = task.max_steps if max_steps is None else max_steps
    episode = Episode()
    try:
        obs = _env_call(start_episode, env, init_state)
        for _ in range(num_steps_wait):
            obs = _env_call(env.step, NOOP_ACTION.copy())[0]
        while episode.steps < max_steps:
            if record_frames:
                episode.frames.append(obs["image"])
            started = time.perf_counter()
            action = np.asarray(policy(obs["image"], task.language), dtype=np.float64)
            episode.latencies_s.append(time.perf_counter() - started)
            obs, _, terminated, truncated, info = _env_call(env.step, action)
            episode.steps += 1
            if info.get("success", False):
                episode.success = True
                break
            if terminated or truncated:
                break
    except EnvError as err:
        episode.error = str(err)
    if record_frames and episode.error is None:
        episode.frames.append(obs["image"])
    return episode


def _env_call(fn, *args):
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - any simulator failure is recorded, not fatal
        raise EnvError(f"{type(err).__name__}: {err}") from err
