"""Rollout loop, resume, reports and videos on a tiny fake env (docs/contracts.md, "Environments") and scripted policies."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass

import numpy as np
import pytest

from vla.eval.envs.base import TaskSpec
from vla.eval.metrics import wilson_interval
from vla.eval.rollout import NOOP_ACTION, run_episode
from vla.eval.runner import evaluate


class LineEnv:
    """Success once the summed x-motion reaches 1; optionally crashes at a given step."""

    def __init__(self, crash_at_step: int | None = None):
        self.crash_at_step = crash_at_step
        self.actions: list[np.ndarray] = []
        self.closed = False
        self.position = 0.0

    def reset(self, seed=None):
        self.position, self.actions = 0.0, []
        return self._obs(), {}

    def step(self, action):
        if self.crash_at_step is not None and len(self.actions) == self.crash_at_step:
            raise RuntimeError("physics exploded")
        self.actions.append(np.array(action))
        self.position += float(action[0])
        success = self.position >= 1.0
        return self._obs(), float(success), success, False, {"success": success}

    def render(self):
        return self._obs()["image"]

    def close(self):
        self.closed = True

    def _obs(self):
        return {"image": np.full((16, 16, 3), int(min(self.position, 1.0) * 255), np.uint8),
                "state": np.zeros(7, np.float32)}


@dataclass
class LineSuite:
    """Task 0 'go' is reachable in 5 steps of 0.2; task 1 'stop' never moves (max 3 steps)."""

    crash: dict | None = None  # (task_id, trial) -> crash step
    name: str = "line"
    n_tasks: int = 2

    def __post_init__(self):
        self.envs: list[LineEnv] = []
        self.trial_of_env: list[int] = []

    def get_task(self, task_id):
        return [TaskSpec("go", "go right", 8), TaskSpec("stop", "stay", 3)][task_id]

    def get_task_init_states(self, task_id):
        return list(range(10))

    def make_env(self, task_id, **kwargs):
        env = CrashOnSeedEnv(self.crash or {}, task_id)
        self.envs.append(env)
        return env


class CrashOnSeedEnv(LineEnv):
    def __init__(self, crash, task_id):
        super().__init__()
        self.crash, self.task_id = crash, task_id

    def reset(self, seed=None):
        self.crash_at_step = self.crash.get((self.task_id, seed))
        return super().reset(seed)


def go_policy(image, instruction):
    return np.array([0.2 if instruction == "go right" else 0.0, 0, 0, 0, 0, 0, 1.0])


POLICY_SLEEP_S = 0.005


def slow_go_policy(image, instruction):
    """``go_policy`` that takes at least ``POLICY_SLEEP_S`` per call, so recorded latencies have a floor."""
    time.sleep(POLICY_SLEEP_S)
    return go_policy(image, instruction)


def test_noop_wait_then_policy_steps_until_success():
    env = LineEnv()
    episode = run_episode(env, go_policy, TaskSpec("go", "go right", 8), init_state=0, num_steps_wait=3)
    assert episode.success and episode.steps == 5 and episode.error is None
    assert all(np.array_equal(a, NOOP_ACTION) for a in env.actions[:3])
    assert len(env.actions) == 3 + 5 and len(episode.latencies_s) == 5


def test_step_budget_excludes_wait_steps():
    env = LineEnv()
    episode = run_episode(env, go_policy, TaskSpec("stop", "stay", 3), init_state=0, num_steps_wait=2)
    assert not episode.success and episode.steps == 3 and len(env.actions) == 5


def test_max_steps_caps_the_task_budget():
    episode = run_episode(LineEnv(), go_policy, TaskSpec("go", "go right", 8), init_state=0, num_steps_wait=0, max_steps=2)
    assert not episode.success and episode.steps == 2


def test_results_rates_ci_and_files(tmp_path):
    results = evaluate(LineSuite(), slow_go_policy, tmp_path, num_trials_per_task=4, num_steps_wait=1, progress=False)
    assert results["suite"]["successes"] == 4 and results["suite"]["episodes"] == 8
    go, stop = results["tasks"]
    assert (go["name"], go["success_rate"], go["ci95_low"]) == ("go", 1.0, pytest.approx(wilson_interval(4, 4)[0]))
    assert stop["success_rate"] == 0.0 and stop["ci95_high"] == pytest.approx(0.4899, abs=1e-4)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(results))
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["scope"] for r in rows] == ["task", "task", "suite"] and rows[2]["success_rate"] == "0.5"
    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 8 and episodes[0]["steps"] == 5
    # Latency is the policy call's time: never below the scripted policy's sleep, per episode and in the summaries.
    assert all(e["mean_latency_s"] >= POLICY_SLEEP_S for e in episodes)
    assert min(go["mean_latency_s"], stop["mean_latency_s"], results["suite"]["mean_latency_s"]) >= POLICY_SLEEP_S


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    low, high = wilson_interval(25, 50)
    assert low == pytest.approx(0.36644, abs=1e-5) and high == pytest.approx(0.63356, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_env_crash_is_a_failed_episode_and_eval_continues(tmp_path):
    suite = LineSuite(crash={(0, 1): 2})
    results = evaluate(suite, go_policy, tmp_path, num_trials_per_task=3, num_steps_wait=0, task_ids=[0], progress=False)
    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [e["success"] for e in episodes] == [True, False, True]
    assert "physics exploded" in episodes[1]["error"] and episodes[1]["steps"] == 2
    assert results["tasks"][0]["errors"] == 1
    assert len(suite.envs) == 2 and suite.envs[0].closed  # the crashed env was replaced


class Killed(Exception):
    pass


def test_killed_eval_resumes_from_episode_records(tmp_path):
    calls = {"n": 0}

    def dies_in_episode_three(image, instruction):
        calls["n"] += 1
        if calls["n"] > 11:  # episodes 0 and 1 of task 0 take 5 calls each
            raise Killed
        return go_policy(image, instruction)

    with pytest.raises(Killed):
        evaluate(LineSuite(), dies_in_episode_three, tmp_path, num_trials_per_task=3, num_steps_wait=0, progress=False)
    with (tmp_path / "episodes.jsonl").open("a") as f:
        f.write('{"task_id": 0, "tri')  # a record cut short by the kill
    seen = []

    def recording(image, instruction):
        seen.append(instruction)
        return go_policy(image, instruction)

    resumed = evaluate(LineSuite(), recording, tmp_path, num_trials_per_task=3, num_steps_wait=0, progress=False)
    fresh = evaluate(LineSuite(), go_policy, tmp_path / "fresh", num_trials_per_task=3, num_steps_wait=0, progress=False)
    assert seen.count("go right") == 5 and seen.count("stay") == 9  # only the 4 missing episodes ran
    outcome = ("successes", "episodes", "success_rate", "ci95_low", "ci95_high", "mean_steps")
    for got, want in zip([resumed["suite"], *resumed["tasks"]], [fresh["suite"], *fresh["tasks"]], strict=True):
        assert {k: got[k] for k in outcome} == {k: want[k] for k in outcome}
    assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 6


def test_resume_with_other_settings_is_refused(tmp_path):
    evaluate(LineSuite(), go_policy, tmp_path, num_trials_per_task=1, num_steps_wait=0, progress=False)
    with pytest.raises(ValueError, match="num_trials_per_task"):
        evaluate(LineSuite(), go_policy, tmp_path, num_trials_per_task=2, num_steps_wait=0, progress=False)


def test_bad_task_ids_and_too_many_trials(tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        evaluate(LineSuite(), go_policy, tmp_path / "a", num_trials_per_task=1, task_ids=[5], progress=False)
    with pytest.raises(ValueError, match="init states"):
        evaluate(LineSuite(), go_policy, tmp_path / "b", num_trials_per_task=11, progress=False)


def test_videos_named_by_outcome(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    evaluate(LineSuite(), go_policy, tmp_path, num_trials_per_task=2, num_steps_wait=0, videos_per_task=1, progress=False)
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["task00_trial000_success.mp4", "task01_trial000_failure.mp4"]
    frames = imageio.mimread(tmp_path / "videos" / videos[0])
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)  # 5 policy steps + the final frame
    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert episodes[0]["video"] == "videos/task00_trial000_success.mp4" and episodes[1]["video"] is None
