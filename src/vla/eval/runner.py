"""Evaluate a policy on every (task, trial) of a suite, resumably, and report success rates."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vla.eval.envs.base import ActFn, Env, TaskSuite
from vla.eval.metrics import summarize
from vla.eval.records import EpisodeLog, EpisodeRecord
from vla.eval.report import print_table, results_dict, write_results, write_success_chart
from vla.eval.rollout import run_episode
from vla.eval.video import video_name, write_mp4

EpisodeCallback = Callable[[EpisodeRecord], None]


def seed_episode(seed: int, task_id: int, trial: int) -> None:
    """Seed per episode so a resumed run replays exactly what a fresh one would."""
    episode_seed = (seed * 1_000_003 + task_id * 10_007 + trial) % 2**32
    random.seed(episode_seed)
    np.random.seed(episode_seed)
    torch.manual_seed(episode_seed)


def evaluate(
    suite: TaskSuite,
    policy: ActFn,
    out_dir: str | os.PathLike,
    num_trials_per_task: int = 50,
    num_steps_wait: int = 10,
    seed: int = 7,
    task_ids: Sequence[int] | None = None,
    videos_per_task: int = 0,
    max_steps: int | None = None,
    settings: dict[str, Any] | None = None,
    on_episode: EpisodeCallback | None = None,
    progress: bool = True,
    num_open_loop_steps: int | None = None,
) -> dict[str, Any]:
    """Run the missing episodes (``<out_dir>/episodes.jsonl`` holds finished ones) and write results.

    ``max_steps`` caps every task's step budget (smoke runs). ``num_open_loop_steps``: actions of each
    chunk answer executed before the next query (None: the whole chunk; it joins the settings only when
    given, so single-action runs keep their settings). ``settings`` identify the run (checkpoint,
    suite, ...); resuming with different ones is refused. Returns the ``results.json`` content.
    """
    if num_trials_per_task < 1:
        raise ValueError(f"num_trials_per_task must be >= 1, got {num_trials_per_task}")
    if num_open_loop_steps is not None and num_open_loop_steps < 1:
        raise ValueError(f"num_open_loop_steps must be null or >= 1, got {num_open_loop_steps}")
    task_ids = list(range(suite.n_tasks)) if task_ids is None else [int(t) for t in task_ids]
    bad = [t for t in task_ids if not 0 <= t < suite.n_tasks]
    if bad:
        raise ValueError(f"Task ids {bad} out of range for suite {suite.name!r} ({suite.n_tasks} tasks)")
    settings = {"suite": suite.name, "num_trials_per_task": num_trials_per_task, "num_steps_wait": num_steps_wait,
                "seed": seed, "task_ids": task_ids, "max_steps": max_steps,
                **({} if num_open_loop_steps is None else {"num_open_loop_steps": num_open_loop_steps}), **(settings or {})}
    log = EpisodeLog(out_dir, settings)
    done = log.done()
    total = len(task_ids) * num_trials_per_task
    with tqdm(total=total, initial=sum((t, i) in done for t in task_ids for i in range(num_trials_per_task)),
              desc=f"eval {suite.name}", unit="episode", disable=not progress) as bar:
        for task_id in task_ids:
            pending = [i for i in range(num_trials_per_task) if (task_id, i) not in done]
            if pending:
                _run_task(suite, policy, task_id, pending, log, num_steps_wait, max_steps, seed, videos_per_task,
                          on_episode, bar, num_open_loop_steps)
    tasks, overall = summarize(suite.name, [r for r in log.records if r.task_id in task_ids])
    results = results_dict(tasks, overall, settings)
    write_results(out_dir, results)
    chart = write_success_chart(out_dir, results)
    if progress:
        print_table(tasks, overall)
        print(f"chart: {chart}")
    return results


def _run_task(suite: TaskSuite, policy: ActFn, task_id: int, trials: list[int], log: EpisodeLog, num_steps_wait: int,
              max_steps: int | None, seed: int, videos_per_task: int, on_episode: EpisodeCallback | None, bar: tqdm,
              num_open_loop_steps: int | None) -> None:
    task = suite.get_task(task_id)
    init_states = suite.get_task_init_states(task_id)
    if max(trials) >= len(init_states):
        raise ValueError(f"Task {task_id} of {suite.name!r} has {len(init_states)} init states; "
                         f"num_trials_per_task must be <= {len(init_states)}")
    env: Env | None = None
    try:
        for trial in trials:
            seed_episode(seed, task_id, trial)
            record_video = trial < videos_per_task
            if env is None:
                try:
                    env = suite.make_env(task_id)
                except Exception as err:  # noqa: BLE001 - an env that fails to start is a failed episode
                    _finish(log, EpisodeRecord(task_id, task.name, trial, False, 0, None, f"{type(err).__name__}: {err}"),
                            on_episode, bar)
                    continue
            episode = run_episode(env, policy, task, init_states[trial], num_steps_wait, record_video, max_steps,
                                  num_open_loop_steps)
            video = None
            if record_video and episode.frames:
                name = video_name(task_id, trial, episode.success)
                write_mp4(episode.frames, Path(log.out_dir) / "videos" / name)
                video = f"videos/{name}"
            record = EpisodeRecord(task_id, task.name, trial, episode.success, episode.steps,
                                   episode.mean_latency_s, episode.error, video)
            _finish(log, record, on_episode, bar)
            if episode.error is not None:  # the env may be in any state now: start a fresh one
                _close_quietly(env)
                env = None
    finally:
        if env is not None:
            _close_quietly(env)


def _finish(log: EpisodeLog, record: EpisodeRecord, on_episode: EpisodeCallback | None, bar: tqdm) -> None:
    log.append(record)
    if on_episode is not None:
        on_episode(record)
    bar.update(1)
    bar.set_postfix(success=f"{sum(r.success for r in log.records)}/{len(log.records)}")


def _close_quietly(env: Env) -> None:
    try:
        env.close()
    except Exception:  # noqa: BLE001 - a crashed env may fail to close; the next one starts clean
        pass
