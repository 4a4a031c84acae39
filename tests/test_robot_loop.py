"""vla-robot: the deployment loop against a real /act server on loopback, chunks, rate, stops, the WidowX stub."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.test_serve import export_tiny_vla
from vla.client import PolicyClient
from vla.policy import load_policy
from vla.robot import ControlLoop, as_chunk, deploy, latency_stats, stop_on_signals
from vla.robot.sim import SimRobot
from vla.robot.widowx import WidowXRobot
from vla.serve.app import ServeSettings, create_app
from vla.serve.server import BackgroundServer

IMAGE_SIZE = 64  # the server resizes to the model's 224 px; small frames keep the recordings small


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("tiny_export")
    export_tiny_vla(checkpoint)
    with BackgroundServer(create_app(load_policy(checkpoint), ServeSettings(max_batch_size=1))) as running:
        yield running


class ScriptedRobot:
    """Frames of a flat grey level that rises by one per applied action; logs every call."""

    def __init__(self):
        self.calls: list[str] = []
        self.applied: list[np.ndarray] = []

    def reset(self):
        self.calls.append("reset")
        self.applied = []
        return self.get_observation()

    def get_observation(self):
        return {"image": np.full((8, 8, 3), len(self.applied), np.uint8), "state": np.zeros(7, np.float32)}

    def apply_action(self, action):
        self.applied.append(np.array(action))

    def stop(self):
        self.calls.append("stop")

    def close(self):
        self.calls.append("close")


class ChunkPolicy:
    """Answers chunks [K, 7] whose entries encode (query number, position in the chunk)."""

    def __init__(self, k: int = 4, delay_s: float = 0.0):
        self.k, self.delay_s, self.queries = k, delay_s, 0

    def act(self, image, instruction, unnorm_key=None):
        time.sleep(self.delay_s)
        chunk = np.array([[self.queries * 10 + i] * 7 for i in range(self.k)], dtype=np.float64)
        self.queries += 1
        return chunk


def load_episode(npz_path):
    with np.load(npz_path) as data:  # allow_pickle=False by default: the recording must not need it
        arrays = {key: data[key] for key in data.files}
    return arrays, json.loads(npz_path.with_suffix(".json").read_text())


def test_sim_robot_against_a_real_server_records_what_the_server_answers(server, tmp_path, capsys):
    """Frames are the sim's observations, actions are the server's answers for them, latencies are real."""
    robot = SimRobot("sim_reach", task_id=1, image_size=IMAGE_SIZE)
    paths = deploy(robot, server.url, control_hz=50, max_steps=4, episodes=2, out_dir=tmp_path)

    assert [p.name for p in paths] == ["episode_000.npz", "episode_001.npz"]
    arrays, summary = load_episode(paths[0])
    assert arrays["images"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and arrays["images"].dtype == np.uint8
    assert arrays["states"].shape == (4, 7) and arrays["actions"].shape == (4, 7)
    assert arrays["queried"].all()
    np.testing.assert_array_equal(arrays["images"][0], SimRobot("sim_reach", 1, image_size=IMAGE_SIZE).reset()["image"])
    assert not np.array_equal(arrays["images"][0], load_episode(paths[1])[0]["images"][0])  # next scene seed
    client = PolicyClient(server.url)
    instruction = "move to the green block"
    assert summary["instruction"] == robot.instruction == instruction
    for frame, action in zip(arrays["images"], arrays["actions"]):
        np.testing.assert_array_equal(action, client.act(frame, instruction))
    latencies = arrays["request_latency_s"]
    assert np.all(latencies > 0) and np.all(latencies < 30)
    assert np.all(arrays["work_s"] >= latencies) and np.all(np.diff(arrays["start_s"]) > 0)
    assert summary["steps"] == 4 and summary["ended_by"] == "max_steps" and summary["queries"] == 4
    assert summary["request_latency_s"]["n"] == 4 and summary["loop_period_s"]["n"] == 3
    assert 0 < summary["request_latency_s"]["p50"] <= summary["request_latency_s"]["max"] < 30
    printed = capsys.readouterr().out
    assert "request latency" in printed and "loop period" in printed and "achieved rate" in printed
    assert str(paths[1]) in printed


def test_chunks_execute_the_first_actions_per_query_then_ask_again(tmp_path):
    """Chunks [4, 7] with actions_per_query=3: queries at steps 0, 3 and 6; the 4th action is never used."""
    robot, policy = ScriptedRobot(), ChunkPolicy(k=4)
    loop = ControlLoop(policy, robot, "stack the cups", control_hz=500, max_steps=7, actions_per_query=3)
    (path,) = loop.run(episodes=1, out_dir=tmp_path)
    arrays, summary = load_episode(path)
    np.testing.assert_array_equal(arrays["actions"][:, 0], [0, 1, 2, 10, 11, 12, 20])
    np.testing.assert_array_equal(arrays["queried"], [1, 0, 0, 1, 0, 0, 1])
    assert np.isnan(arrays["request_latency_s"][~arrays["queried"]]).all()
    np.testing.assert_array_equal(np.stack(robot.applied), arrays["actions"])
    np.testing.assert_array_equal(arrays["images"][:, 0, 0, 0], np.arange(7))  # a fresh observation every step
    assert summary["queries"] == 3 and summary["request_latency_s"]["n"] == 3


def test_loop_keeps_the_control_rate_and_counts_overruns(tmp_path):
    """At 20 Hz a fast policy waits out each 50 ms period; a 30 ms policy at 50 Hz overruns every query step."""
    loop = ControlLoop(ChunkPolicy(k=1), ScriptedRobot(), "wave", control_hz=20, max_steps=6)
    loop.run(1, tmp_path / "fast")
    periods = loop.recordings[0].periods_s()
    assert periods.min() >= 0.049 and np.median(periods) < 0.08
    assert loop.recordings[0].overruns() == 0

    slow = ControlLoop(ChunkPolicy(k=1, delay_s=0.03), ScriptedRobot(), "wave", control_hz=50, max_steps=4)
    slow.run(1, tmp_path / "slow")
    assert slow.recordings[0].overruns() == 4
    assert slow.recordings[0].summary()["achieved_hz"] < 50


def test_stop_from_another_thread_ends_after_the_current_step_stops_the_robot_and_records(tmp_path):
    robot = ScriptedRobot()
    loop = ControlLoop(ChunkPolicy(k=1), robot, "wave", control_hz=20, max_steps=10_000)
    threading.Timer(0.3, loop.stop).start()
    start = time.perf_counter()
    (path,) = loop.run(episodes=3, out_dir=tmp_path)
    assert time.perf_counter() - start < 5
    arrays, summary = load_episode(path)
    assert summary["ended_by"] == "stop" and 1 <= summary["steps"] < 100
    assert len(arrays["actions"]) == len(robot.applied) == summary["steps"]
    assert robot.calls == ["reset", "stop"]  # stopped once, and no further episode started


def test_sigterm_stops_cleanly_and_restores_the_handlers(tmp_path):
    """The first signal only asks the loop to stop; afterwards the previous handlers are back."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    robot = ScriptedRobot()
    loop = ControlLoop(ChunkPolicy(k=1), robot, "wave", control_hz=20, max_steps=10_000)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with stop_on_signals(loop):
        (path,) = loop.run(episodes=1, out_dir=tmp_path)
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert load_episode(path)[1]["ended_by"] == "stop"
    assert robot.calls == ["reset", "stop"]


def test_vla_robot_command_ctrl_c_finishes_the_step_and_writes_the_recording(server, tmp_path):
    """The console command end to end: Hydra config, the sim robot, Ctrl-C, the report, the recording."""
    command = shutil.which("vla-robot")
    assert command, "vla-robot is not on PATH (pip install -e .)"
    process = subprocess.Popen(
        [command, f"server={server.url}", "control_hz=20", "max_steps=10000", "episodes=2",
         f"robots.sim.image_size={IMAGE_SIZE}", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith("driving SimRobot at 20 Hz"), first_line + process.stdout.read()
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "SIGINT: stopping after the current step" in output and "achieved rate" in output
    arrays, summary = load_episode(tmp_path / "episode_000.npz")
    assert summary["ended_by"] == "stop" and summary["steps"] == len(arrays["actions"]) >= 1
    assert not (tmp_path / "episode_001.npz").exists()


def test_widowx_stub_raises_naming_what_to_implement():
    robot = WidowXRobot()
    expected = {"reset": "WidowXClient", "get_observation": "uint8 [256, 256, 3]", "apply_action": "step_action",
                "stop": "hold the current pose", "close": "connection"}
    for method, hint in expected.items():
        args = (np.zeros(7),) if method == "apply_action" else ()
        with pytest.raises(NotImplementedError, match=f"WidowXRobot.{method}: ") as raised:
            getattr(robot, method)(*args)
        assert hint in str(raised.value)
    assert (robot.image_size, robot.step_duration_s, robot.blocking) == (256, 0.2, True)


def test_failed_episode_stops_the_robot_records_and_raises(tmp_path):
    class FailingPolicy(ChunkPolicy):
        def act(self, image, instruction, unnorm_key=None):
            if self.queries == 2:
                raise ConnectionError("server went away")
            return super().act(image, instruction, unnorm_key)

    robot = ScriptedRobot()
    loop = ControlLoop(FailingPolicy(k=1), robot, "wave", control_hz=500, max_steps=10)
    with pytest.raises(ConnectionError):
        loop.run(episodes=1, out_dir=tmp_path)
    arrays, summary = load_episode(tmp_path / "episode_000.npz")
    assert summary["steps"] == 2 and summary["ended_by"] == "error: ConnectionError: server went away"
    assert robot.calls == ["reset", "stop"]


def test_answers_that_must_not_reach_a_robot_are_refused():
    assert as_chunk(np.zeros(7)).shape == (1, 7)
    for bad in (np.zeros((2, 3, 7)), np.zeros((0, 7)), np.zeros(0), np.array([0.0, np.nan, 0.0])):
        with pytest.raises(ValueError):
            as_chunk(bad)
    with pytest.raises(ValueError, match="instruction"):
        ControlLoop(ChunkPolicy(), ScriptedRobot(), "")


def test_latency_stats_ignore_steps_without_a_request():
    stats = latency_stats([0.1, float("nan"), 0.3, 0.2])
    assert stats["n"] == 3 and stats["max"] == 0.3 and stats["p50"] == pytest.approx(0.2)
    assert stats["mean"] == pytest.approx(0.2)
    assert latency_stats([]) == {"n": 0, "mean": None, "p50": None, "p95": None, "max": None}


def test_robot_package_loads_without_torch():
    """The loop runs on a robot's computer: importing it (and the sim robot) must not pull in torch."""
    code = "import sys, vla.robot, vla.robot.sim, vla.robot.widowx; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
