"""Sim throughput: env steps/s with and without rendering, expert episodes/s, RLDS write speed.

Usage: python bench/bench_sim.py [--steps 2000] [--episodes 60]
The baseline is physics + success check without rendering, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from vla.sim import ScriptedExpert, SimTaskSuite
from data_prep.sim_rlds import generate_rlds
from vla.sim.demos import episode_plan, record_episode
from vla.sim.scene import apply_action


def expert_actions(suite: SimTaskSuite, count: int) -> list[tuple[int, int, list[np.ndarray]]]:
    """Pre-recorded expert episodes (task, seed, actions) so every variant replays the same work."""
    episodes = []
    for task_id, seed in episode_plan(count, seed=0, suite=suite):
        env, expert = suite.make_env(task_id, image_size=16, wrist_image=False), ScriptedExpert(seed=seed)
        env.reset(seed=seed)
        actions = []
        while True:
            actions.append(expert.act(env.scene, env.task))
            _, _, terminated, truncated, _ = env.step(actions[-1])
            if terminated or truncated:
                break
        episodes.append((task_id, seed, actions))
    return episodes


def replay_steps_per_s(suite: SimTaskSuite, episodes, image_size: int | None, wrist: bool) -> float:
    """Replay the episodes; image_size None = physics and success check only (no rendering)."""
    steps, start = 0, time.perf_counter()
    for task_id, seed, actions in episodes:
        env = suite.make_env(task_id, image_size=image_size or 16, wrist_image=wrist)
        env.reset(seed=seed)
        for action in actions:
            if image_size is None:
                apply_action(env.scene, action)
                env.task.is_success(env.scene)
            else:
                env.step(action)
            steps += 1
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="approximate env steps per variant")
    parser.add_argument("--episodes", type=int, default=60, help="episodes for the expert and RLDS rows")
    args = parser.parse_args()
    suite = SimTaskSuite("sim_all")
    episodes = expert_actions(suite, max(1, args.steps // 11))  # sim_all expert episodes average ~11 steps
    n_steps = sum(len(a) for _, _, a in episodes)

    rows = [("env step, physics only (baseline)", replay_steps_per_s(suite, episodes, None, False), "steps/s")]
    for size, wrist in ((224, True), (224, False), (64, True)):
        label = f"env step + render {size}px" + (" + wrist" if wrist else "")
        rows.append((label, replay_steps_per_s(suite, episodes, size, wrist), "steps/s"))

    start = time.perf_counter()
    expert_steps = sum(len(record_episode(suite, t, s, 224, 0.002)) for t, s in episode_plan(args.episodes, 1, suite))
    expert_time = time.perf_counter() - start
    rows.append(("expert demos 224px + wrist", args.episodes / expert_time, "episodes/s"))

    with tempfile.TemporaryDirectory() as warm_up, tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()  # the first write pays tfds's lazy imports (thousands of modules)
        generate_rlds(warm_up, episodes=2, seed=2, image_size=224, progress=False)
        rows.append(("RLDS first write, 2 episodes (imports)", time.perf_counter() - start, "s"))
        start = time.perf_counter()
        generate_rlds(out, episodes=args.episodes, seed=1, image_size=224, progress=False)
        rlds_time = time.perf_counter() - start
    rows.append(("RLDS generate + write 224px (vla_sim)", args.episodes / rlds_time, "episodes/s"))
    rows.append(("RLDS generate + write 224px (vla_sim)", expert_steps / rlds_time, "steps/s"))

    baseline = rows[0][1]
    print(f"sim_all, {n_steps} replayed steps per env variant, {args.episodes} episodes ({expert_steps} steps) for demos")
    print(f"{'variant':<40} {'rate':>10} {'unit':<11} {'vs baseline':>11}")
    for label, rate, unit in rows:
        ratio = f"{rate / baseline:.3f}x" if unit == "steps/s" else ""
        print(f"{label:<40} {rate:>10.1f} {unit:<11} {ratio:>11}")


if __name__ == "__main__":
    main()
