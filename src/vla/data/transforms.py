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
    """DROID base-frame velocity actions; gripper position inverted so 1 = open (camera swap: registry ``swapped_views``)."""
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


# === Rotation utilities (OpenVLA uses tensorflow_graphics; these are NumPy equivalents) ===


def euler_from_quaternion(quaternions: np.ndarray) -> np.ndarray:
    """Quaternions ``[..., 4]`` in ``(x, y, z, w)`` order -> roll-pitch-yaw ``[..., 3]``.

    Same convention as ``tensorflow_graphics.geometry.transformation.euler.from_quaternion``
    (OpenVLA's ``tft.euler.from_quaternion``): ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``, angles in radians;
    at gimbal lock (``|pitch| = pi/2``) yaw is 0. Quaternions are used as given (not renormalized).
    """
    q = np.asarray(quaternions, dtype=np.float64)
    x, y, z, w = np.moveaxis(q, -1, 0)
    r00 = 1.0 - 2.0 * (y * y + z * z)
    r10 = 2.0 * (x * y + w * z)
    r20 = np.clip(2.0 * (x * z - w * y), -1.0, 1.0)
    r21 = 2.0 * (y * z + w * x)
    r22 = 1.0 - 2.0 * (x * x + y * y)
    r01 = 2.0 * (x * y - w * z)
    r02 = 2.0 * (x * z + w * y)
    pitch = -np.arcsin(r20)
    gimbal = np.isclose(np.abs(r20), 1.0, rtol=0.0, atol=1e-12)
    pitch = np.where(gimbal, -np.sign(r20) * np.pi / 2, pitch)
    sign_cos = np.where(np.cos(pitch) >= 0, 1.0, -1.0)
    roll = np.arctan2(r21 * sign_cos, r22 * sign_cos)
    yaw = np.arctan2(r10 * sign_cos, r00 * sign_cos)
    sign_pitch = np.where(pitch >= 0, 1.0, -1.0)
    roll = np.where(gimbal, np.arctan2(sign_pitch * r01, sign_pitch * r02), roll)
    yaw = np.where(gimbal, 0.0, yaw)
    return np.stack([roll, pitch, yaw], axis=-1).astype(np.float32)


def rotation_matrix_from_euler(euler: np.ndarray) -> np.ndarray:
    """Roll-pitch-yaw ``[..., 3]`` -> rotation matrices ``[..., 3, 3]`` (``Rz @ Ry @ Rx``, as above)."""
    e = np.asarray(euler, dtype=np.float64)
    (cx, cy, cz), (sx, sy, sz) = np.moveaxis(np.cos(e), -1, 0), np.moveaxis(np.sin(e), -1, 0)
    rows = [
        [cy * cz, sx * sy * cz - cx * sz, cx * sy * cz + sx * sz],
        [cy * sz, sx * sy * sz + cx * cz, cx * sy * sz - sx * cz],
        [-sy, sx * cy, cx * cy],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def rotation_matrix_to_r6(matrices: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> R6 (first two rows, concatenated) ``[..., 6]``."""
    m = np.asarray(matrices)
    return np.concatenate([m[..., 0, :], m[..., 1, :]], axis=-1)


def velocity_to_wrist_frame(velocity: np.ndarray, wrist_pose: np.ndarray) -> np.ndarray:
    """DROID base-frame velocity ``[T, 6]`` -> wrist-frame ``[T, 9]`` (translation + R6 rotation).

    ``wrist_pose`` is the EEF pose in the base frame ``[T, 6]`` (XYZ + roll-pitch-yaw):
    ``dt' = R^-1 dt`` and ``dR' = R^-1 dR R`` (OpenVLA's ``velocity_act_to_wrist_frame``).
    """
    velocity, wrist_pose = np.asarray(velocity, np.float64), np.asarray(wrist_pose, np.float64)
    frame = rotation_matrix_from_euler(wrist_pose[:, 3:6])
    frame_inv = np.swapaxes(frame, -1, -2)
    translation = (frame_inv @ velocity[:, :3, None])[..., 0]
    rotation = frame_inv @ rotation_matrix_from_euler(velocity[:, 3:6]) @ frame
    return np.concatenate([translation, rotation_matrix_to_r6(rotation)], axis=-1).astype(np.float32)


# === Open X-Embodiment transforms (the rest of OpenVLA's registry) ===


def _col(values: np.ndarray) -> np.ndarray:
    """A per-step scalar (``[T]`` or ``[T, 1]``) as a float32 column ``[T, 1]``."""
    values = np.asarray(values, dtype=np.float32)
    return values.reshape(len(values), -1)[:, :1]


def _open_gripper_from_closedness(gripper: np.ndarray) -> np.ndarray:
    """Absolute closedness (1 closed .. 0 open, or -1..1) -> clip to [0, 1] and flip, 1 = open."""
    return invert_gripper_actions(np.clip(_col(gripper), 0, 1))


def _world_rotation(action: dict[str, np.ndarray], gripper: np.ndarray) -> np.ndarray:
    return _concat(action["world_vector"], action["rotation_delta"], gripper)


def nyu_door_opening_transform(episode: Episode) -> Episode:
    action = episode["action"]
    gripper = rel2abs_gripper_actions(_col(action["gripper_closedness_action"])[:, 0])
    episode["action"] = _world_rotation(action, gripper[:, None])
    return _language_from_observation(episode)


def berkeley_autolab_ur5_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], episode["action"]
    obs["state"] = obs["robot_state"][:, 6:14]
    obs["depth"] = obs.pop("image_with_depth")
    gripper = rel2abs_gripper_actions(_col(action["gripper_closedness_action"])[:, 0])
    episode["action"] = _world_rotation(action, gripper[:, None])
    return _language_from_observation(episode)


def pusht_transform(episode: Episode) -> Episode:
    """columbia_cairlab_pusht_real: gripper closedness passed through unchanged (as OpenVLA)."""
    action = episode["action"]
    episode["action"] = _world_rotation(action, _col(action["gripper_closedness_action"]))
    return _language_from_observation(episode)


def stanford_kuka_multimodal_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], np.asarray(episode["action"], dtype=np.float32)
    obs["depth_image"] = obs["depth_image"][..., 0]
    episode["action"] = _concat(action[:, :3], np.zeros_like(action[:, :3]), action[:, -1:])
    return episode


def nyu_rot_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["eef_state"] = obs["state"][..., :6]
    obs["gripper_state"] = obs["state"][..., -1:]
    episode["action"] = _concat(episode["action"][..., :7])
    return episode


def stanford_hydra_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], episode["action"]
    episode["action"] = _concat(action[:, :6], invert_gripper_actions(action[:, -1:]))
    obs["eef_state"] = _concat(obs["state"][:, :3], obs["state"][:, 7:10])
    obs["gripper_state"] = obs["state"][:, -3:-2]
    return episode


def _eef6_clip_invert(episode: Episode) -> Episode:
    """Actions ``[:6]`` + gripper (-1 open .. 1 close, or 0..1 closedness) clipped and flipped to 1 = open."""
    action = episode["action"]
    episode["action"] = _concat(action[:, :6], _open_gripper_from_closedness(action[:, -1:]))
    return episode


def austin_buds_transform(episode: Episode) -> Episode:
    episode = _eef6_clip_invert(episode)
    episode["observation"]["state"] = episode["observation"]["state"][:, :8]
    return episode


def nyu_franka_play_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], episode["action"]
    obs["depth"] = np.asarray(obs["depth"][..., 0], dtype=np.float32)
    obs["depth_additional_view"] = np.asarray(obs["depth_additional_view"][..., 0], dtype=np.float32)
    obs["eef_state"] = obs["state"][:, -6:]
    episode["action"] = _concat(action[:, -8:-2], np.clip(action[:, -2:-1], 0, 1))
    return episode


def maniskill_transform(episode: Episode) -> Episode:
    episode["observation"]["gripper_state"] = episode["observation"]["state"][..., 7:8]
    return episode


def furniture_bench_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], episode["action"]
    obs["state"] = _concat(obs["state"][:, :7], obs["state"][:, -1:])
    episode["action"] = _concat(
        action[:, :3], euler_from_quaternion(action[:, 3:7]), _open_gripper_from_closedness(action[:, -1:])
    )
    return episode


def drop_last_action_dim_transform(episode: Episode) -> Episode:
    """cmu_franka_exploration / imperialcollege_sawyer_wrist_cam: drop the trailing (terminate) dim."""
    episode["action"] = _concat(episode["action"][..., :-1])
    return episode


def ucsd_kitchen_transform(episode: Episode) -> Episode:
    episode["observation"]["joint_state"] = episode["observation"]["state"][:, :7]
    return drop_last_action_dim_transform(episode)


def _eef_gripper_from_state(episode: Episode) -> Episode:
    """``eef_state = state[:, :6]``, ``gripper_state = state[:, -1:]``."""
    obs = episode["observation"]
    obs["eef_state"] = obs["state"][:, :6]
    obs["gripper_state"] = obs["state"][:, -1:]
    return episode


def _xyz_zero_rotation(action: np.ndarray, xyz: int = 3) -> np.ndarray:
    """First ``xyz`` dims, zeros up to 6, then the last (gripper) dim."""
    action = np.asarray(action, dtype=np.float32)
    return _concat(action[:, :xyz], np.zeros((len(action), 6 - xyz), np.float32), action[:, -1:])


def ucsd_pick_place_transform(episode: Episode) -> Episode:
    episode = _eef_gripper_from_state(episode)
    episode["action"] = _xyz_zero_rotation(episode["action"])
    return episode


def austin_sailor_transform(episode: Episode) -> Episode:
    return _eef6_clip_invert(episode)


def austin_sirius_transform(episode: Episode) -> Episode:
    return _eef6_clip_invert(episode)


def bc_z_transform(episode: Episode) -> Episode:
    action = episode["action"]
    episode["action"] = _concat(
        action["future/xyz_residual"][:, :3],
        action["future/axis_angle_residual"][:, :3],
        invert_gripper_actions(_col(action["future/target_close"])),
    )
    return _language_from_observation(episode)


def tokyo_pr2_transform(episode: Episode) -> Episode:
    """utokyo_pr2_opening_fridge / utokyo_pr2_tabletop_manipulation."""
    return drop_last_action_dim_transform(_eef_gripper_from_state(episode))


def identity_transform(episode: Episode) -> Episode:
    """Datasets already in the target layout (actions a ``[T, A]`` array, state keys as configured)."""
    episode["action"] = _concat(episode["action"])
    return episode


def utokyo_xarm_bimanual_transform(episode: Episode) -> Episode:
    """Keeps the last 7 action dims (one arm)."""
    episode["action"] = _concat(episode["action"][..., -7:])
    return episode


def robo_net_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["eef_state"] = _concat(obs["state"][:, :4], np.zeros_like(obs["state"][:, :2]))
    obs["gripper_state"] = obs["state"][:, -1:]
    episode["action"] = _xyz_zero_rotation(episode["action"], xyz=4)
    return episode


def kaist_nonprehensile_transform(episode: Episode) -> Episode:
    action = np.asarray(episode["action"], dtype=np.float32)
    episode["observation"]["state"] = episode["observation"]["state"][:, -7:]
    episode["action"] = _concat(action[:, :6], np.zeros_like(action[:, :1]))
    return episode


def stanford_mask_vit_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    pose = obs["end_effector_pose"]
    obs["eef_state"] = _concat(pose[:, :4], np.zeros_like(pose[:, :2]))
    obs["gripper_state"] = pose[:, -1:]
    episode["action"] = _xyz_zero_rotation(episode["action"], xyz=4)
    return episode


def tokyo_lsmo_transform(episode: Episode) -> Episode:
    return identity_transform(_eef_gripper_from_state(episode))


def dlr_sara_grid_clamp_transform(episode: Episode) -> Episode:
    episode["observation"]["state"] = episode["observation"]["state"][:, :6]
    return identity_transform(episode)


def dlr_edan_shared_control_transform(episode: Episode) -> Episode:
    action = episode["action"]
    episode["action"] = _concat(action[:, :6], invert_gripper_actions(action[:, -1:]))
    return episode


def asu_table_top_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["eef_state"] = episode["ground_truth_states"]["EE"]
    obs["gripper_state"] = obs["state"][:, -1:]
    return identity_transform(episode)


def robocook_transform(episode: Episode) -> Episode:
    return identity_transform(_eef_gripper_from_state(episode))


def iamlab_pick_insert_transform(episode: Episode) -> Episode:
    obs, action = episode["observation"], episode["action"]
    obs["joint_state"] = obs["state"][:, :7]
    obs["gripper_state"] = obs["state"][:, 7:8]
    episode["action"] = _concat(action[:, :3], euler_from_quaternion(action[:, 3:7]), action[:, 7:8])
    return episode


def uiuc_d3field_transform(episode: Episode) -> Episode:
    action = np.asarray(episode["action"], dtype=np.float32)
    episode["action"] = _concat(action, np.zeros_like(action), np.zeros_like(action[:, :1]))
    return episode


def utaustin_mutex_transform(episode: Episode) -> Episode:
    episode = _eef6_clip_invert(episode)
    episode["observation"]["state"] = episode["observation"]["state"][:, :8]
    return episode


def berkeley_fanuc_transform(episode: Episode) -> Episode:
    """No gripper actions stored: the (inverted) gripper state stands in for them."""
    obs = episode["observation"]
    obs["joint_state"] = obs["state"][:, :6]
    obs["gripper_state"] = obs["state"][:, 6:7]
    episode["action"] = _concat(episode["action"], invert_gripper_actions(obs["gripper_state"]))
    return episode


def cmu_playing_with_food_transform(episode: Episode) -> Episode:
    action = episode["action"]
    episode["action"] = _concat(action[:, :3], euler_from_quaternion(action[:, 3:7]), action[:, -1:])
    return episode


def playfusion_transform(episode: Episode) -> Episode:
    action = episode["action"]
    episode["action"] = _concat(action[:, :3], action[:, -4:])
    return episode


def cmu_stretch_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["eef_state"] = _concat(obs["state"][:, :3], np.zeros_like(obs["state"][:, :3]))
    obs["gripper_state"] = obs["state"][:, -1:]
    return drop_last_action_dim_transform(episode)


def gnm_transform(episode: Episode) -> Episode:
    """berkeley_gnm_*: 2-D navigation; state = position (2) + zeros (3) + yaw (1), actions padded to 7-D."""
    obs, action = episode["observation"], np.asarray(episode["action"], dtype=np.float32)
    obs["state"] = _concat(obs["position"], np.zeros_like(obs["state"][:, :3]), _col(obs["yaw"]))
    episode["action"] = _concat(action, np.zeros_like(action), np.zeros_like(action), np.zeros_like(action[:, :1]))
    return episode


def fmb_transform(episode: Episode) -> Episode:
    obs = episode["observation"]
    obs["proprio"] = _concat(obs["eef_pose"], _col(obs["state_gripper_pose"]))
    return identity_transform(episode)


def dobbe_transform(episode: Episode) -> Episode:
    episode["observation"]["proprio"] = episode["observation"]["state"]
    return identity_transform(episode)


def roboset_transform(episode: Episode) -> Episode:
    """JOINT_POS: 7 joint deltas + gripper (-1..1 clipped and flipped to 1 = open)."""
    action = episode["action"]
    episode["observation"]["proprio"] = episode["observation"]["state"]
    episode["action"] = _concat(action[:, :7], _open_gripper_from_closedness(action[:, -1:]))
    return episode


def rh20t_transform(episode: Episode) -> Episode:
    action, obs = episode["action"], episode["observation"]
    episode["action"] = _concat(action["tcp_base"], _col(action["gripper"]))
    obs["proprio"] = _concat(obs["tcp_base"], _col(obs["gripper_width"]))
    return episode


def tdroid_transform(episode: Episode) -> Episode:
    """T-DROID (and OpenVLA's ppgm): binarized gripper; state from cartesian / gripper position."""
    action, obs = episode["action"], episode["observation"]
    episode["action"] = _concat(action[:, :6], binarize_gripper_actions(action[:, -1])[:, None])
    obs["EEF_state"] = obs["cartesian_position"][:, :6]
    obs["gripper_state"] = obs["gripper_position"][:, -1:]
    return episode


ppgm_transform = tdroid_transform  # OpenVLA's ppgm_dataset_transform is the same function


def droid_finetuning_transform(episode: Episode) -> Episode:
    """droid_wipe: DROID base-frame actions without the exterior-camera swap."""
    return droid_transform(episode)


def droid_wrist_action_transform(episode: Episode) -> Episode:
    """DROID with wrist-frame EEF_R6 actions (OpenVLA's ``droid_wristact_transform``; not in its registry)."""
    action, obs = episode["action_dict"], episode["observation"]
    wrist = velocity_to_wrist_frame(action["cartesian_velocity"], obs["cartesian_position"])
    episode["action"] = _concat(wrist, action["gripper_position"])
    obs["proprio"] = _concat(obs["cartesian_position"], obs["gripper_position"])
    return episode
