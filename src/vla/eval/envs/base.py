"""The env/suite interface that closed-loop evaluation runs against (docs/contracts.md, "Environments").

Both the built-in sim and the LIBERO adapter implement it, so one rollout loop serves both.
Actions are the policy's unnormalized 7-D EEF_POS actions (gripper 1 = open, 0 = close);
an env converts them to its own controller convention itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = dict[str, np.ndarray]
# What a rollout drives: (the env's observation dict, instruction) -> one 7-D action [7] or a chunk of
# them [K, 7] (action-chunk policies; the rollout executes its first actions open loop). The whole
# observation goes in so a policy can take the views and proprio its model uses. A vla.policy.Policy
# is one; tests and smoke runs pass scripted functions.
ActFn = Callable[[Observation, str], np.ndarray]


@runtime_checkable
class Env(Protocol):
    """Gymnasium-style env; ``obs = {"image": uint8 HxWx3, "wrist_image"?: ..., "state": float32 [S]}``.

    ``state`` is the proprio the env's training data stores (sim 7-D, LIBERO 8-D as OpenVLA-OFT).
    """

    def reset(self, seed: int | None = None) -> tuple[Observation, dict[str, Any]]: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, dict[str, Any]]: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


class InitStateEnv(Env, Protocol):
    """An env whose init states are simulator states (LIBERO): ``reset()`` then ``set_init_state``."""

    def set_init_state(self, state: Any) -> Observation: ...


class Task(Protocol):
    name: str
    language: str
    max_steps: int


class TaskSuite(Protocol):
    """A named set of tasks, each with a fixed list of initial states (one per trial)."""

    name: str
    n_tasks: int

    def get_task(self, task_id: int) -> Task: ...

    def get_task_init_states(self, task_id: int) -> list[Any]: ...

    def make_env(self, task_id: int, **kwargs: Any) -> Env:
        """A fresh env for the task; int init states go to ``reset(seed=...)``, others to ``set_init_state``."""


@dataclass(frozen=True)
class TaskSpec:
    """A plain :class:`Task` for adapters whose native task objects lack some fields."""

    name: str
    language: str
    max_steps: int
