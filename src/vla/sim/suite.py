"""LIBERO-shaped task suites over the sim, addressed by name (e.g. `task_suite=sim_reach`)."""

from __future__ import annotations

from vla.sim.env import SimTabletopEnv
from vla.sim.scene import COLOURS
from vla.sim.tasks import SimTask, build_tasks

SIM_SUITES: dict[str, tuple[str, ...]] = {
    "sim_reach": ("reach",),
    "sim_push": ("push",),
    "sim_pick_place": ("pick_place",),
    "sim_all": ("reach", "push", "pick_place"),
}
# Evaluation scenes come from seeds >= this; demo generation draws its seeds below it, so the
# scenes a policy is scored on are never ones it was trained on.
EVAL_SEED_BASE = 1_000_000_000


class SimTaskSuite:
    """Tasks with language and init states, like a LIBERO benchmark.

    Every task gets the same init states (seeds), so each scene is seen with every target and a
    policy that ignores the instruction succeeds about once per number of objects.
    """

    def __init__(self, name: str = "sim_all", n_objects: int = 3, n_init_states: int = 50) -> None:
        if name not in SIM_SUITES:
            raise ValueError(f"unknown sim suite {name!r}; expected one of {sorted(SIM_SUITES)}")
        if n_init_states < 1:
            raise ValueError(f"n_init_states must be >= 1, got {n_init_states}")
        if not 1 <= n_objects <= len(COLOURS):
            raise ValueError(f"n_objects must be in [1, {len(COLOURS)}], got {n_objects}")
        self.name = name
        self.n_objects = n_objects
        self.n_init_states = n_init_states
        self.tasks = build_tasks(SIM_SUITES[name], tuple(COLOURS)[:n_objects])

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def get_task(self, task_id: int) -> SimTask:
        self._check_task_id(task_id)
        return self.tasks[task_id]

    def get_task_init_states(self, task_id: int) -> list[int]:
        """Held-out scene seeds, identical for every task of the suite."""
        self._check_task_id(task_id)
        return [EVAL_SEED_BASE + k for k in range(self.n_init_states)]

    def make_env(self, task_id: int, image_size: int = 224, wrist_image: bool = True) -> SimTabletopEnv:
        return SimTabletopEnv(self.get_task(task_id), self.n_objects, image_size, wrist_image)

    def _check_task_id(self, task_id: int) -> None:
        if not 0 <= task_id < self.n_tasks:
            raise ValueError(f"task_id {task_id} out of range for suite {self.name!r} with {self.n_tasks} tasks")
