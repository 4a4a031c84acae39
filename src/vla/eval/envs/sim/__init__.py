"""Built-in simulated tabletop: env, LIBERO-shaped task suites and a scripted expert (no TF here)."""

from vla.eval.envs.sim.env import SimTabletopEnv
from vla.eval.envs.sim.expert import ScriptedExpert
from vla.eval.envs.sim.suite import EVAL_SEED_BASE, SIM_SUITES, SimTaskSuite
from vla.eval.envs.sim.tasks import SimTask

__all__ = ["EVAL_SEED_BASE", "SIM_SUITES", "ScriptedExpert", "SimTabletopEnv", "SimTask", "SimTaskSuite"]
