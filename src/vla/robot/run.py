"""What ``vla-robot`` runs: connect to the policy server, drive the robot, record, report latencies."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vla.client import PolicyClient
from vla.robot.base import Robot
from vla.robot.loop import ControlLoop
from vla.robot.recording import format_report

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(loop: ControlLoop) -> Iterator[None]:
    """The first Ctrl-C / SIGTERM asks ``loop`` to stop after its current step instead of killing it mid-move.

    The handler then puts the previous handlers back, so a second signal interrupts as usual.
    Outside the main thread (where Python delivers no signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handle(signum: int, _frame: object) -> None:
        print(f"\n{signal.Signals(signum).name}: stopping after the current step (send it again to interrupt)",
              file=sys.stderr, flush=True)
        loop.stop()
        restore()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        restore()


def deploy(robot: Robot, server: str, instruction: str | None = None, api_key: str | None = None,
           unnorm_key: str | None = None, control_hz: float = 5.0, max_steps: int = 100, actions_per_query: int | None = None,
           episodes: int = 1, out_dir: str | os.PathLike = "outputs/robot", timeout_s: float = 10.0) -> list[Path]:
    """Run ``episodes`` episodes of ``robot`` against the server at ``server``; returns the recordings (.npz).

    ``instruction`` defaults to the robot's own (``SimRobot`` knows its task's). The server is
    checked before the robot moves; the robot and the connection are closed whatever happens.
    """
    instruction = instruction or getattr(robot, "instruction", None)
    if not instruction:
        raise ValueError(f"{type(robot).__name__} has no task of its own: set instruction=...")
    client = PolicyClient(server, api_key=api_key, timeout_s=timeout_s)
    try:
        client.health()
        loop = ControlLoop(client, robot, instruction, control_hz, max_steps, actions_per_query, unnorm_key)
        with stop_on_signals(loop):
            print(f"driving {type(robot).__name__} at {control_hz:g} Hz, up to {max_steps} steps x {episodes} episode(s): "
                  f"{instruction!r} (Ctrl-C stops after the current step)", flush=True)
            paths = loop.run(episodes, out_dir)
    finally:
        robot.close()
        client.close()
    print(format_report(loop.recordings))
    print("recordings: " + ", ".join(str(p) for p in paths))
    return paths
