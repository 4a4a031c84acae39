"""Per-dataset standardization transforms (OpenVLA's ``oxe/transforms.py``), in NumPy.

An *episode* is a dict of step-batched NumPy arrays as read from RLDS: ``episode["observation"][key]``
is ``[T, ...]``, ``episode["action"]`` is ``[T, A]`` or a dict of such arrays, ``episode[key]`` for
other step keys (``language_instruction``, ``is_first``, ...). Image observations are object
arrays of encoded bytes. A transform returns the episode with ``action`` as one ``[T, A]`` array,
the state keys named in the dataset config and ``language_instruction`` present. TensorFlow is
never needed here, so training code can import this module.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

Episode = dict[str, Any]
Transform = Callable[[Episode], Episode]


# === Primitives (OpenVLA ``rlds/utils/data_utils.py``) ===


def slice_steps(episode: Episode, steps: slice) -> Episode:
    """Slice every step-batched array of the episode the same way (nested dicts included)."""
    return {k: slice_steps(v, steps) if isinstance(v, dict) else v[steps] for k, v in episode.items()}


def binarize_gripper_actions(actions: np.ndarray) -> np.ndarray:
    """Continuous gripper in [0, 1] -> {0, 1}; values in between take the next decided value.

    Scans backwards from the last action (whose raw value seeds the carry, as OpenVLA's tf.scan).
    """
    actions = np.asarray(actions, dtype=np.float32)
    is_open, is_closed = actions > 0.95, actions < 0.05
    out = np.empty_like(actions)
    carry = actions[-1] if len(actions) else np.float32(0)
    for i in range(len(actions) - 1, -1, -1):
        if is_open[i] or is_closed[i]:
            carry = np.float32(is_open[i])
        out[i] = carry
    return out


def invert_gripper_actions(actions: np.ndarray) -> np.ndarray:
    return (1 - np.asarray(actions)).astype(np.float32)


def rel2abs_gripper_actions(actions: np.ndarray) -> np.ndarray:
    """Relative gripper (+1 close, -1 open, 0 keep) -> absolute (1 open, 0 closed).

    Before the first command the gripper is assumed in the state opposite to it (open if none).
    """
    actions = np.asarray(actions)
    commands = np.where(actions < -0.1, 1, np.where(actions > 0.1, -1, 0))
    nonzero = np.flatnonzero(commands)
    carry = -commands[nonzero[0]] if len(nonzero) else 1
    out = np.empty(len(commands), dtype=np.float32)
    for i, command in enumerate(commands):
        carry = command if command != 0 else carry
        out[i] = carry / 2 + 0.5
    return out


def relabel_bridge_actions(episode: Episode) -> Episode:
    """Movement actions from reached states ``state[t+1,:6] - state[t,:6]``; drops the last step."""
    state = episode["observation"]["state"]
    movement = state[1:, :6] - state[:-1, :6]
    truncated = slice_steps(episode, slice(None, -1))
    truncated["action"] = np.concatenate([movement, episode["action"][:-1, -1:]], axis=1).astype(np.float32)
    return truncated


def _drop_first_step(episode: Episode) -> Episode:
    """Bridge's first step carries an all-zero action, so OpenVLA drops it from every key."""
    return slice_steps(episode, slice(1, None))


def _concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=-1)


def _language_from_observation(episode: Episode) -> Episode:
    episode["language_instruction"] = episode["observation"]["natural_language_instruction"]
    return episode


# === Dataset transforms ===


def bridge_orig_transform(episode: Episode) -> Episode:
    """Original Bridge V2 (``bridge_orig`` / ``bridge_dataset``)."""
    episode = _drop_first_step(episode)
    episode["action"] = _concat(episode["action"][:, :6], binarize_gripper_actions(episode["action"][:, -1])[:, None])
    episode = relabel_bridge_actions(episode)
    episode["observation"]["EEF_state"] = episode["observation"]["state"][:, :6]
    episode["observation"]["gripper_state"] = episode["observation"]["state"][:, -1:]
    return episode


def bridge_oxe_transform(episode: Episode) -> Episode:
    """Bridge V2 as shipped inside the Open X-Embodiment mixture."""
    episode = _drop_first_step(episode)
    action = episode["action"]
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], action["open_gripper"][:, None])
    episode = relabel_bridge_actions(_language_from_observation(episode))
    episode["observation"]["EEF_state"] = episode["observation"]["state"][:, :6]
    episode["observation"]["gripper_state"] = episode["observation"]["state"][:, -1:]
    return episode


def rt1_transform(episode: Episode) -> Episode:
    """fractal20220817_data (RT-1): relative gripper closedness -> absolute open/close."""
    action = episode["action"]
    gripper = rel2abs_gripper_actions(action["gripper_closedness_action"][:, 0])
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], gripper[:, None])
    return _language_from_observation(episode)


def kuka_transform(episode: Episode) -> Episode:
    """kuka: as RT-1, plus its zlib-compressed float32 state fields."""
    episode = rt1_transform(episode)
    obs = episode["observation"]
    pose_key = "clip_function_input/base_pose_tool_reached"
    obs[pose_key] = _decompress_float32(obs[pose_key]).reshape(-1, 7)
    obs["gripper_closed"] = _decompress_float32(obs["gripper_closed"]).reshape(-1, 1)
    return episode


def _decompress_float32(values: np.ndarray) -> np.ndarray:
    return np.concatenate([np.frombuffer(zlib.decompress(bytes(v)), dtype=np.float32) for v in values])


def taco_play_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["state_eef"] = obs["robot_obs"][:, :6]
    obs["state_gripper"] = obs["robot_obs"][:, 7:8]
    action = episode["action"]["rel_actions_world"]
    episode["action"] = _concat(action[:, :6], np.clip(action[:, -1:], 0, 1))
    return _language_from_observation(episode)


def jaco_play_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["state_eef"] = obs["end_effector_cartesian_pos"][:, :6]
    obs["state_gripper"] = obs["end_effector_cartesian_pos"][:, -1:]
    action = episode["action"]
    gripper = rel2abs_gripper_actions(action["gripper_closedness_action"][:, 0])
    episode["action"] = _concat(action["world_vector"], np.zeros_like(action["world_vector"]), gripper[:, None])
    return _language_from_observation(episode)


def berkeley_cable_routing_transform(episode: Episode) -> Episode:
    action = episode["action"]
    gripper = np.zeros_like(action["world_vector"][:, :1])
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], gripper)
    return _language_from_observation(episode)


def roboturk_transform(episode: Episode) -> Episode:
    action = episode["action"]
    gripper = invert_gripper_actions(np.clip(action["gripper_closedness_action"], 0, 1))
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], gripper.reshape(-1, 1))
    return _language_from_observation(episode)


def viola_transform(episode: Episode) -> Episode:
    action = episode["action"]
    gripper = invert_gripper_actions(np.clip(action["gripper_closedness_action"].reshape(-1, 1), 0, 1))
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], gripper)
    return _language_from_observation(episode)


def toto_transform(episode: Episode) -> Episode:
    action = episode["action"]
    episode["action"] = _concat(action["world_vector"], action["rotation_delta"], action["open_gripper"][:, None])
    return _language_from_observation(episode)


def language_table_transform(episode: Episode) -> Episode:
    """2-D planar pushing: pad to 7-D with a permanently open gripper; decode code-point text."""
    action = np.asarray(episode["action"], dtype=np.float32)
    episode["action"] = _concat(action, np.zeros_like(action), np.zeros_like(action), np.ones_like(action[:, :1]))
    codepoints = np.asarray(episode["observation"]["instruction"])
    episode["language_instruction"] = np.array(
        ["".join(map(chr, row)).split("\x00")[0] for row in codepoints], dtype=object
    )
    return episode


def droid_transform(episode: Episode) -> Episode:
    """DROID base-frame velocity actions; gripper position inverted so 1 = open."""
    action, obs = episode["action_dict"], episode["observation"]
    velocity = action["cartesian_velocity"]
    episode["action"] = _concat(velocity[:, :3], velocity[:, 3:6], 1 - np.asarray(action["gripper_position"]))
    obs["proprio"] = _concat(obs["cartesian_position"], obs["gripper_position"])
    return episode


def libero_transform(episode: Episode) -> Episode:
    """LIBERO: gripper -1 (open)..1 (close) -> clip to [0, 1] and flip; 2-D gripper state."""
    action = episode["action"]
    episode["action"] = _concat(action[:, :6], invert_gripper_actions(np.clip(action[:, -1:], 0, 1)))
    episode["observation"]["EEF_state"] = episode["observation"]["state"][:, :6]
    episode["observation"]["gripper_state"] = episode["observation"]["state"][:, -2:]
    return episode


def vla_sim_transform(episode: Episode) -> Episode:
    """The project's own sim demos (docs/contracts.md, "Sim demos (RLDS)"): actions are already EEF_POS, gripper 1 = open."""
    episode["action"] = np.asarray(episode["action"], dtype=np.float32)
    episode["observation"]["EEF_state"] = episode["observation"]["state"][:, :6]
    episode["observation"]["gripper_state"] = episode["observation"]["state"][:, 6:7]
    return episode
