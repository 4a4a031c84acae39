"""Robot-side deployment (``vla-robot``): drive a robot from a policy server's ``POST /act``.

Torch-free on purpose: it needs numpy and requests (through :mod:`vla.client`), so it runs on the
robot's computer. ``SimRobot`` (:mod:`vla.robot.sim`) and ``WidowXRobot`` (:mod:`vla.robot.widowx`)
are imported from their modules, so the loop never loads the sim unless asked.
"""

from vla.robot.base import Observation, Robot
from vla.robot.loop import ControlLoop, as_chunk
from vla.robot.recording import EpisodeRecording, format_report, latency_stats, write_recording
from vla.robot.run import deploy, stop_on_signals

__all__ = ["ControlLoop", "EpisodeRecording", "Observation", "Robot", "as_chunk", "deploy", "format_report",
           "latency_stats", "stop_on_signals", "write_recording"]
