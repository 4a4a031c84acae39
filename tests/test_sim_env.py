"""The built-in sim: physics, rendering, task suites and the scripted expert (no TensorFlow here)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vla.sim import EVAL_SEED_BASE, ScriptedExpert, SimTabletopEnv, SimTask, SimTaskSuite
from vla.sim.scene import COLOURS, MAX_TRANSLATION

IMAGE_SIZE = 48  # small renders keep the suite-wide rollouts fast
NOOP = np.array([0, 0, 0, 0, 0, 0, 1.0])


def rollout(env: SimTabletopEnv, seed: int, policy_task: SimTask | None = None) -> dict:
    """Run the scripted expert (aiming at `policy_task`, default the env's own task) to the end."""
    expert = ScriptedExpert(noise_std=0.002, seed=seed)
    env.reset(seed=seed)
    for _ in range(env.max_steps):
        _, _, terminated, truncated, info = env.step(expert.act(env.scene, policy_task or env.task))
        if terminated or truncated:
            return info
    raise AssertionError("episode neither terminated nor truncated within max_steps")


@pytest.mark.parametrize("suite_name", ["sim_reach", "sim_push", "sim_pick_place"])
def test_scripted_expert_solves_every_task(suite_name):
    suite = SimTaskSuite(suite_name, n_init_states=6)
    for task_id in range(suite.n_tasks):
        env = suite.make_env(task_id, image_size=IMAGE_SIZE)
        for seed in suite.get_task_init_states(task_id):
            info = rollout(env, seed)
            assert info["success"], (env.task.language, seed)
            assert info["steps"] <= env.task.max_steps


def test_expert_solves_four_object_scenes_with_more_noise():
    suite = SimTaskSuite("sim_all", n_objects=4, n_init_states=2)
    for task_id in range(suite.n_tasks):
        env = suite.make_env(task_id, image_size=IMAGE_SIZE, wrist_image=False)
        for seed in suite.get_task_init_states(task_id):
            expert = ScriptedExpert(noise_std=0.005, seed=seed)
            env.reset(seed=seed)
            for _ in range(env.max_steps):
                _, _, terminated, truncated, info = env.step(expert.act(env.scene, env.task))
                if terminated or truncated:
                    break
            assert info["success"], (env.task.language, seed)


@pytest.mark.parametrize("suite_name", ["sim_reach", "sim_pick_place"])
def test_language_blind_policy_succeeds_only_on_its_fixed_target(suite_name):
    """Same scenes for every target: ignoring the instruction scores about 1 / number of objects."""
    suite = SimTaskSuite(suite_name, n_init_states=8)
    outcomes = []
    for task_id in range(suite.n_tasks):
        task = suite.get_task(task_id)
        env = suite.make_env(task_id, image_size=IMAGE_SIZE, wrist_image=False)
        blind = SimTask(task.family, target=list(COLOURS)[0], direction=task.direction)
        for seed in suite.get_task_init_states(task_id):
            success = rollout(env, seed, policy_task=blind)["success"]
            assert success == (task.target == blind.target), (task.language, seed)
            outcomes.append(success)
    assert np.mean(outcomes) == pytest.approx(1 / suite.n_objects)


def test_same_seed_same_scene_for_every_task_and_deterministic_rendering():
    suite = SimTaskSuite("sim_all", n_init_states=1)
    seed = suite.get_task_init_states(0)[0]
    first = [suite.make_env(t).reset(seed=seed)[0] for t in range(suite.n_tasks)]
    for observation in first[1:]:
        for key in ("image", "wrist_image", "state"):
            np.testing.assert_array_equal(observation[key], first[0][key])
    env_a, env_b = suite.make_env(0), suite.make_env(0)
    env_a.reset(seed=seed), env_b.reset(seed=seed)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = np.concatenate([rng.uniform(-0.05, 0.05, 6), [rng.uniform()]])
        obs_a, obs_b = env_a.step(action)[0], env_b.step(action)[0]
        for key in ("image", "wrist_image", "state"):
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
    np.testing.assert_array_equal(env_a.render(), obs_a["image"])
    other = suite.make_env(0).reset(seed=seed + 1)[0]["image"]
    assert not np.array_equal(other, first[0]["image"])


def test_observation_layout_and_visible_content():
    env = SimTabletopEnv(SimTask("reach", "red"), n_objects=3, image_size=224)
    observation, info = env.reset(seed=3)
    assert observation["image"].shape == observation["wrist_image"].shape == (224, 224, 3)
    assert observation["image"].dtype == np.uint8
    assert observation["state"].dtype == np.float32 and observation["state"].shape == (7,)
    assert observation["state"][6] == 1.0 and info == {"success": False, "task": "move_to_the_red_block",
                                                       "language": "move to the red block", "steps": 0}
    image = observation["image"].reshape(-1, 3)
    for colour in ("red", "green", "blue"):
        assert np.sum(np.all(image == COLOURS[colour], axis=1)) > 50, colour
    assert not np.any(np.all(image == COLOURS["yellow"], axis=1))
    closed = env.step(np.array([0, 0, 0, 0, 0, 0, 0.0]))[0]
    assert closed["state"][6] == 0.0
    assert not np.array_equal(closed["image"], observation["image"])  # the fingers are drawn closed
    assert "wrist_image" not in SimTabletopEnv(SimTask("reach", "red"), wrist_image=False).reset(seed=0)[0]


def test_actions_are_clipped_and_validated():
    env = SimTabletopEnv(SimTask("reach", "red"), image_size=IMAGE_SIZE)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(NOOP)
    start = env.reset(seed=0)[0]["state"]
    state = env.step(np.array([1.0, -1.0, 0, 3.0, 0, 0, 7.0]))[0]["state"]
    np.testing.assert_allclose(state[:2] - start[:2], [MAX_TRANSLATION, -MAX_TRANSLATION], atol=1e-6)
    assert state[3] == pytest.approx(0.25) and state[6] == 1.0
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 1.0]))


def test_episode_truncates_at_max_steps_without_success():
    env = SimTabletopEnv(SimTask("push", "blue", "left"), image_size=IMAGE_SIZE, max_steps=4)
    env.reset(seed=0)
    results = [env.step(NOOP) for _ in range(4)]
    assert [r[3] for r in results] == [False, False, False, True]
    assert not any(r[2] for r in results) and all(r[1] == 0.0 for r in results)


def test_push_and_pick_place_physics():
    env = SimTabletopEnv(SimTask("pick_place", "green"), image_size=IMAGE_SIZE)
    env.reset(seed=5)
    scene = env.scene
    green = scene.block_index("green")
    # Teleport the gripper just right of the block at table level, then sweep left: it pushes.
    scene.gripper_pos = scene.block_pos[green].copy() + [0.06, 0.0, 0.02]
    env.step(np.array([-0.04, 0, 0, 0, 0, 0, 1.0]))
    assert scene.block_pos[green, 0] < scene.initial_block_pos[green, 0]
    # Centre over the block and close: grasped, carried, released on the plate -> success.
    scene.gripper_pos = scene.block_pos[green].copy() + [0.0, 0.0, 0.02]
    env.step(np.array([0, 0, 0, 0, 0, 0, 0.0]))
    assert scene.held == green
    env.step(np.array([0, 0, 0.05, 0, 0, 0, 0.0]))
    assert scene.block_pos[green, 2] > 0
    scene.gripper_pos[:2] = scene.plate_xy
    _, reward, terminated, _, info = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert scene.held is None and scene.block_pos[green, 2] == 0.0
    assert terminated and reward == 1.0 and info["success"]


def test_suite_contract():
    suite = SimTaskSuite("sim_all", n_init_states=5)
    assert suite.name == "sim_all" and suite.n_tasks == 3 + 6 + 3
    tasks = [suite.get_task(i) for i in range(suite.n_tasks)]
    assert len({t.language for t in tasks}) == suite.n_tasks
    assert tasks[3].language == "push the red block to the left" and tasks[3].max_steps == 40
    states = suite.get_task_init_states(0)
    assert states == suite.get_task_init_states(11) == list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 5))
    env = suite.make_env(11, image_size=64)
    assert env.language == "pick up the blue block and put it on the plate"
    np.testing.assert_array_equal(env.set_init_state(states[2])["image"], env.reset(seed=states[2])[0]["image"])
    with pytest.raises(ValueError, match="out of range"):
        suite.get_task(12)
    with pytest.raises(ValueError, match="unknown sim suite"):
        SimTaskSuite("sim_nope")
    with pytest.raises(ValueError, match="push tasks need a direction"):
        SimTask("push", "red")


def test_env_modules_do_not_import_tensorflow():
    code = ("import sys, vla.sim, vla.sim.demos; "
            "assert not any(m.split('.')[0] in {'tensorflow', 'tensorflow_datasets'} for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_paired_demo_plan_shows_each_scene_with_every_task_and_keeps_val_scenes_apart():
    from vla.sim.demos import episode_plan, validated_val_count

    suite = SimTaskSuite("sim_reach")  # 3 tasks
    plain = episode_plan(10, seed=0, suite=suite)
    assert [task for task, _ in plain] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert len({seed for _, seed in plain}) == 10  # unpaired: a new scene per episode (as before)
    paired = episode_plan(10, seed=0, suite=suite, paired=True)
    assert [task for task, _ in paired] == [task for task, _ in plain]
    groups = [{seed for _, seed in paired[i:i + 3]} for i in range(0, 10, 3)]
    assert all(len(group) == 1 for group in groups) and len(set.union(*groups)) == 4
    assert all(seed < EVAL_SEED_BASE for _, seed in paired)
    # val = last 10% (1 episode), moved back to a scene boundary: episodes 9.. (not 9 alone mid-scene)
    n_val = validated_val_count(10, 0.1, scene_group=3)
    assert n_val == 1 and (10 - n_val) % 3 == 0
    n_val = validated_val_count(11, 0.1, scene_group=3)
    assert n_val == 2 and {s for _, s in episode_plan(11, 0, suite, True)[:9]}.isdisjoint(
        {s for _, s in episode_plan(11, 0, suite, True)[9:]})
    with pytest.raises(ValueError, match="episodes must be >= 6"):
        validated_val_count(5, 0.1, scene_group=3)
