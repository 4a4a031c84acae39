"""One closed-loop episode: settle with no-ops, then policy steps until success or the step budget.

Chunk policies answer K actions per query; the first ``num_open_loop_steps`` of them run open loop
(without looking at the observations in between) before the policy is asked again, as OpenVLA-OFT's
eval does with its action queue.
"""

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
    latencies_s: list[float] = field(default_factory=list)  # one per policy query
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


def open_loop_actions(answer: np.ndarray, num_open_loop_steps: int | None = None) -> list[np.ndarray]:
    """The actions of one policy answer to execute before the next query: an action [D] is one, a chunk
    [K, D] gives its first ``num_open_loop_steps`` (None: all K)."""
    chunk = np.asarray(answer, dtype=np.float64)
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or 0 in chunk.shape:
        raise ValueError(f"A policy must answer an action [D] or a chunk [K, D], got shape {list(np.shape(answer))}")
    if num_open_loop_steps is not None and num_open_loop_steps > len(chunk):
        raise ValueError(f"num_open_loop_steps={num_open_loop_steps}, but the policy answered {len(chunk)} action(s)")
    return list(chunk[:num_open_loop_steps])


def run_episode(env: Env, policy: ActFn, task: Task, init_state: Any, num_steps_wait: int = 10,
                record_frames: bool = False, max_steps: int | None = None,
                num_open_loop_steps: int | None = None) -> Episode:
    """Roll out ``policy`` on ``task`` for ``max_steps`` (default: the task's budget) env steps.

    The policy sees the whole observation; from each answer ``num_open_loop_steps`` actions (None:
    the whole chunk, 1 for single actions) run before it is asked again. Env exceptions end the
    episode as a failure with the error.
    """
    max_steps = task.max_steps if max_steps is None else max_steps
    episode = Episode()
    queue: list[np.ndarray] = []
    try:
        obs = _env_call(start_episode, env, init_state)
        for _ in range(num_steps_wait):
            obs = _env_call(env.step, NOOP_ACTION.copy())[0]
        while episode.steps < max_steps:
            if record_frames:
                episode.frames.append(obs["image"])
            if not queue:
                started = time.perf_counter()
                answer = policy(obs, task.language)
                episode.latencies_s.append(time.perf_counter() - started)
                queue = open_loop_actions(answer, num_open_loop_steps)
            obs, _, terminated, truncated, info = _env_call(env.step, queue.pop(0))
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
