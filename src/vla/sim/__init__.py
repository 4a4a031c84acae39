"""Built-in simulated tabletop: env, LIBERO-shaped task suites and a scripted expert (no TF here)."""

from vla.sim.env import SimTabletopEnv
from vla.sim.expert import ScriptedExpert
from vla.sim.suite import EVAL_SEED_BASE, SIM_SUITES, SimTaskSuite
from vla.sim.tasks import SimTask

__all__ = ["EVAL_SEED_BASE", "SIM_SUITES", "ScriptedExpert", "SimTabletopEnv", "SimTask", "SimTaskSuite"]
