"""Open X-Embodiment parity: every OpenVLA dataset config/transform and named mixture (openvla @ c8f03f48).

Each registered RLDS dataset's transform is run, through ``DatasetConfig.standardize``, on a synthetic
episode built from :data:`FEATURES`: that dataset's step features (the keys and shapes OpenVLA's
configs and transforms index in the OXE RLDS layout). Shapes marked ``# ~`` were not pinned offline
(only the indices OpenVLA uses are certain); every other row follows the OXE dataset cards.
"""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from vla.data import transforms as T
from vla.data.mixtures import MIXTURES, OPENVLA_MIXTURES, resolve_mixture
from vla.data.registry import DATASET_CONFIGS, ActionEncoding, DatasetConfig

STEPS = 6
REPO = Path(__file__).resolve().parents[1]


# --- feature-spec vocabulary: per-step shape + how to fill it -------------------------------------
def I(h: int, w: int) -> tuple:  # noqa: E743 - RGB image, uint8 HxWx3
    return ("image", (h, w, 3))


def D(h: int, w: int, c: int | None = 1) -> tuple:  # depth map (float32)
    return ("depth", (h, w) if c is None else (h, w, c))


def F(*shape: int) -> tuple:  # float32 array (values in [-1, 1])
    return ("float", shape)


def Q() -> tuple:  # unit quaternion (x, y, z, w)
    return ("quat", (4,))


BOOL = ("bool", ())
TEXT = ("text", ())  # a string per step
CODEPOINTS = ("codepoints", (512,))  # language_table: int32 unicode code points, zero padded


def Z(n: int) -> tuple:  # zlib-compressed float32[n] bytes (kuka)
    return ("zlib", (n,))


RT_ACTION = {"world_vector": F(3), "rotation_delta": F(3), "gripper_closedness_action": F(1), "terminate_episode": F(3)}
LANG_OBS = {"natural_language_instruction": TEXT}
LANG = {"language_instruction": TEXT}  # top-level step key (datasets converted externally to RLDS)


def spec(obs: dict, action, proprio: int, step: dict | None = None, action_key: str = "action") -> dict:
    return {"observation": obs, action_key: action, "step": step if step is not None else LANG, "proprio": proprio}


def ext(name: str) -> str:
    return f"{name}_converted_externally_to_rlds"


_TDROID = spec(
    {"static_image": I(256, 256), "static_depth_image": D(256, 256), "cartesian_position": F(6),
     "gripper_position": F(1)}, F(7), 8)  # fmt: skip  # ~ image size
_LIBERO = spec({"image": I(256, 256), "wrist_image": I(256, 256), "state": F(8), "joint_state": F(7)}, F(7), 9)
_GNM = spec({"image": I(120, 160), "state": F(3), "position": F(2), "yaw": F(1)}, F(2), 8)
_DROID_OBS = {"exterior_image_1_left": I(180, 320), "exterior_image_2_left": I(180, 320),
              "wrist_image_left": I(180, 320), "cartesian_position": F(6), "gripper_position": F(1),
              "joint_position": F(7)}  # fmt: skip
_DROID_ACTION = {"cartesian_velocity": F(6), "gripper_position": F(1), "joint_velocity": F(7)}
_BRIDGE_ORIG = spec({f"image_{i}": I(256, 256) for i in range(4)} | {"state": F(7)}, F(7), 8)

# Proprio sizes follow from OpenVLA's state keys (not always its nominal 8: viola and LIBERO 9, DROID 7, ...).
FEATURES: dict[str, dict] = {
    "fractal20220817_data": spec(
        {"image": I(256, 320), "base_pose_tool_reached": F(7), "gripper_closed": F(1), **LANG_OBS},
        RT_ACTION | {"base_displacement_vector": F(2), "base_displacement_vertical_rotation": F(1)}, 8, step={}),
    "kuka": spec(
        {"image": I(512, 640), "clip_function_input/base_pose_tool_reached": Z(7), "gripper_closed": Z(1),
         **LANG_OBS}, RT_ACTION, 8, step={}),
    "bridge_oxe": spec(
        {"image": I(256, 256), "image_1": I(256, 256), "state": F(7), **LANG_OBS},
        {"world_vector": F(3), "rotation_delta": F(3), "open_gripper": BOOL, "terminate_episode": F()}, 8, step={}),
    "bridge_orig": _BRIDGE_ORIG,
    "bridge_dataset": _BRIDGE_ORIG,
    "taco_play": spec(
        {"rgb_static": I(150, 200), "rgb_gripper": I(84, 84), "depth_static": D(150, 200, None),
         "depth_gripper": D(84, 84, None), "robot_obs": F(15), **LANG_OBS},
        {"rel_actions_world": F(7), "rel_actions_gripper": F(7), "actions": F(7), "terminate_episode": F()}, 8,
        step={}),
    "jaco_play": spec(
        {"image": I(224, 224), "image_wrist": I(224, 224), "end_effector_cartesian_pos": F(7), **LANG_OBS},
        {"world_vector": F(3), "gripper_closedness_action": F(1), "terminate_episode": F(3)}, 8, step={}),
    "berkeley_cable_routing": spec(
        {"image": I(128, 128), "top_image": I(128, 128), "wrist45_image": I(128, 128),
         "wrist225_image": I(128, 128), "robot_state": F(7), **LANG_OBS},
        {"world_vector": F(3), "rotation_delta": F(3), "terminate_episode": F()}, 8, step={}),
    "roboturk": spec({"front_rgb": I(480, 640), **LANG_OBS}, RT_ACTION, 8, step={}),
    "nyu_door_opening_surprising_effectiveness": spec({"image": I(720, 960), **LANG_OBS}, RT_ACTION, 8, step={}),
    "viola": spec(
        {"agentview_rgb": I(224, 224), "eye_in_hand_rgb": I(224, 224), "joint_states": F(7),
         "gripper_states": F(2), "ee_states": F(16), **LANG_OBS},
        RT_ACTION | {"gripper_closedness_action": F()}, 9, step={}),
    "berkeley_autolab_ur5": spec(
        {"image": I(480, 640), "hand_image": I(480, 640), "image_with_depth": D(480, 640), "robot_state": F(15),
         **LANG_OBS}, RT_ACTION | {"gripper_closedness_action": F()}, 8, step={}),
    "toto": spec(
        {"image": I(480, 640), "state": F(7), **LANG_OBS},
        {"world_vector": F(3), "rotation_delta": F(3), "open_gripper": BOOL, "terminate_episode": F()}, 8, step={}),
    "language_table": spec(
        {"rgb": I(360, 640), "effector_translation": F(2), "effector_target_translation": F(2),
         "instruction": CODEPOINTS}, F(2), 8, step={}),
    "columbia_cairlab_pusht_real": spec(
        {"image": I(240, 320), "wrist_image": I(240, 320), "robot_state": F(2), **LANG_OBS},
        RT_ACTION | {"gripper_closedness_action": F()}, 8, step={}),
    ext("stanford_kuka_multimodal_dataset"): spec(
        {"image": I(128, 128), "depth_image": D(128, 128), "ee_position": F(3), "ee_orientation": F(4),
         "joint_pos": F(7), "state": F(8)}, F(4), 8),
    ext("nyu_rot_dataset"): spec({"image": I(84, 84), "state": F(7)}, F(7), 8),
    ext("stanford_hydra_dataset"): spec({"image": I(240, 320), "wrist_image": I(240, 320), "state": F(27)}, F(7), 8),
    ext("austin_buds_dataset"): spec({"image": I(128, 128), "wrist_image": I(128, 128), "state": F(24)}, F(7), 8),
    ext("nyu_franka_play_dataset"): spec(
        {"image": I(128, 128), "image_additional_view": I(128, 128), "depth": D(128, 128),
         "depth_additional_view": D(128, 128), "state": F(13)}, F(15), 8),
    ext("maniskill_dataset"): spec(
        {"image": I(256, 256), "wrist_image": I(256, 256), "depth": D(256, 256), "wrist_depth": D(256, 256),
         "state": F(18), "tcp_pose": F(7), "base_pose": F(7)}, F(7), 8),
    ext("furniture_bench_dataset"): spec({"image": I(224, 224), "wrist_image": I(224, 224), "state": F(35)},
                                          ("concat", [F(3), Q(), F(1)]), 8),
    ext("cmu_franka_exploration_dataset"): spec({"highres_image": I(480, 640), "image": I(64, 64)}, F(8), 8),
    ext("ucsd_kitchen_dataset"): spec({"image": I(480, 640), "state": F(21)}, F(8), 8),
    ext("ucsd_pick_and_place_dataset"): spec({"image": I(224, 224), "state": F(7)}, F(4), 8),
    ext("austin_sailor_dataset"): spec({"image": I(128, 128), "wrist_image": I(128, 128), "state": F(8)}, F(7), 8),
    ext("austin_sirius_dataset"): spec({"image": I(84, 84), "wrist_image": I(84, 84), "state": F(8)}, F(7), 8),
    "bc_z": spec(
        {"image": I(171, 213), "present/xyz": F(3), "present/axis_angle": F(3), "present/sensed_close": F(1),
         **LANG_OBS},
        {"future/xyz_residual": F(30), "future/axis_angle_residual": F(30), "future/target_close": F(10)}, 8,
        step={}),
    ext("utokyo_pr2_opening_fridge"): spec({"image": I(128, 128), "state": F(7)}, F(8), 8),
    ext("utokyo_pr2_tabletop_manipulation"): spec({"image": I(128, 128), "state": F(7)}, F(8), 8),
    ext("utokyo_xarm_pick_and_place"): spec(
        {"image": I(224, 224), "image2": I(224, 224), "hand_image": I(224, 224), "end_effector_pose": F(6),
         "joint_state": F(14)}, F(7), 8),
    ext("utokyo_xarm_bimanual"): spec({"image": I(256, 256), "pose_r": F(7), "pose_l": F(7)}, F(14), 9),  # ~ pose
    "robo_net": spec({"image": I(240, 320), "image1": I(240, 320), "image2": I(240, 320), "state": F(5)}, F(5), 8),
    ext("berkeley_mvp"): spec({"hand_image": I(480, 640), "pose": F(7), "gripper": F(1), "joint_pos": F(7)}, F(8), 8),
    ext("berkeley_rpt"): spec({"hand_image": I(480, 640), "joint_pos": F(7), "gripper": F(1)}, F(8), 8),
    ext("kaist_nonprehensile"): spec({"image": I(480, 640), "state": F(21)}, F(20), 8),
    ext("stanford_mask_vit"): spec(
        {"image": I(480, 480), "end_effector_pose": F(5), "finger_sensors": F(1), "state": F(15)}, F(5), 8),
    ext("tokyo_u_lsmo"): spec({"image": I(120, 120), "state": F(13)}, F(7), 8),
    ext("dlr_sara_pour"): spec({"image": I(480, 640), "state": F(6)}, F(7), 8),
    ext("dlr_sara_grid_clamp"): spec({"image": I(480, 640), "state": F(12)}, F(7), 8),
    ext("dlr_edan_shared_control"): spec({"image": I(360, 640), "state": F(7)}, F(7), 8),
    ext("asu_table_top"): spec({"image": I(224, 224), "state": F(7)}, F(7), 8,
                               step=LANG | {"ground_truth_states": {"EE": F(6), "bottle": F(6)}}),
    ext("stanford_robocook"): spec(
        {"image_1": I(256, 256), "image_2": I(256, 256), "depth_1": D(256, 256, None),
         "depth_2": D(256, 256, None), "state": F(7)}, F(7), 8),
    "imperialcollege_sawyer_wrist_cam": spec(
        {"image": I(64, 64), "wrist_image": I(64, 64), "state": F(1)}, F(8), 8),
    ext("iamlab_cmu_pickup_insert"): spec(
        {"image": I(360, 640), "wrist_image": I(240, 320), "state": F(20)}, ("concat", [F(3), Q(), F(1)]), 8),
    "uiuc_d3field": spec(
        {"image_1": I(360, 640), "image_2": I(360, 640), "depth_1": D(360, 640), "depth_2": D(360, 640),
         "state": F(4, 4)}, F(3), 8),
    "utaustin_mutex": spec({"image": I(128, 128), "wrist_image": I(128, 128), "state": F(24)}, F(7), 8),
    "berkeley_fanuc_manipulation": spec(
        {"image": I(224, 224), "wrist_image": I(224, 224), "state": F(13), "end_effector_state": F(7)}, F(6), 8),
    "cmu_playing_with_food": spec(
        {"image": I(480, 640), "finger_vision_1": I(480, 640), "finger_vision_2": I(480, 640), "state": F(6)},
        ("concat", [F(3), Q(), F(1)]), 8),  # ~ state width
    "cmu_play_fusion": spec({"image": I(128, 128), "state": F(8)}, F(9), 8),
    "cmu_stretch": spec({"image": I(128, 128), "state": F(4)}, F(8), 8),
    "berkeley_gnm_recon": _GNM,
    "berkeley_gnm_cory_hall": _GNM,
    "berkeley_gnm_sac_son": _GNM,
    "droid": spec(_DROID_OBS, _DROID_ACTION, 7, action_key="action_dict"),
    "fmb_dataset": spec(
        {"image_side_1": I(256, 256), "image_side_2": I(256, 256), "image_wrist_1": I(256, 256),
         "image_wrist_2": I(256, 256), "image_side_1_depth": D(256, 256, None), "image_side_2_depth": D(256, 256, None),
         "image_wrist_1_depth": D(256, 256, None), "eef_pose": F(7), "state_gripper_pose": F(), "joint_pos": F(7)},
        F(7), 8),
    "dobbe": spec({"wrist_image": I(256, 256), "state": F(7)}, F(7), 7),
    "roboset": spec(
        {"image_left": I(240, 424), "image_right": I(240, 424), "image_wrist": I(240, 424), "state": F(8)}, F(8), 8),
    "rh20t": spec(  # ~ tcp_base width (6 = XYZ + roll-pitch-yaw, which EEF_POS needs)
        {"image_front": I(360, 640), "image_side_right": I(360, 640), "image_wrist": I(360, 640),
         "tcp_base": F(6), "gripper_width": F()}, {"tcp_base": F(6), "gripper": F()}, 7),
    **{f"tdroid_{task}": _TDROID for task in (
        "carrot_in_bowl", "pour_corn_in_pot", "flip_pot_upright", "move_object_onto_plate", "knock_object_over",
        "cover_object_with_towel")},
    "droid_wipe": spec(_DROID_OBS, _DROID_ACTION, 7, action_key="action_dict"),
    "libero_spatial_no_noops": _LIBERO,
    "libero_object_no_noops": _LIBERO,
    "libero_goal_no_noops": _LIBERO,
    "libero_10_no_noops": _LIBERO,
    "vla_sim": spec({"image": I(64, 64), "wrist_image": I(64, 64), "state": F(7)}, F(7), 8),
}  # fmt: skip

RLDS_DATASETS = sorted(name for name, config in DATASET_CONFIGS.items() if config.source_format == "rlds")


def _fill(kind_shape, rng: np.random.Generator, steps: int = STEPS):
    if isinstance(kind_shape, dict):
        return {key: _fill(value, rng, steps) for key, value in kind_shape.items()}
    kind, shape = kind_shape
    if kind == "concat":
        return np.concatenate([_fill(part, rng, steps) for part in shape], axis=-1)
    if kind == "image":
        return np.zeros((steps, *shape), dtype=np.uint8)
    if kind == "depth":
        return rng.uniform(0, 2, (steps, *shape)).astype(np.float32)
    if kind == "float":
        return rng.uniform(-1, 1, (steps, *shape)).astype(np.float32)
    if kind == "quat":
        q = rng.normal(size=(steps, 4))
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    if kind == "bool":
        return rng.integers(0, 2, steps).astype(bool)
    if kind == "text":
        return np.array([b"pick up the cup"] * steps, dtype=object)
    if kind == "codepoints":
        row = np.zeros(shape, dtype=np.int32)
        row[: len("push the block")] = [ord(c) for c in "push the block"]
        return np.repeat(row[None], steps, axis=0)
    if kind == "zlib":
        return np.array([zlib.compress(rng.uniform(-1, 1, shape).astype(np.float32).tobytes())] * steps, dtype=object)
    raise ValueError(kind)


def synthetic_episode(name: str, seed: int = 0) -> dict:
    features, rng = FEATURES[name], np.random.default_rng(seed)
    episode = {"observation": _fill(features["observation"], rng)}
    action_key = "action_dict" if "action_dict" in features else "action"
    episode[action_key] = _fill(features[action_key], rng)
    episode.update(_fill(features["step"], rng))
    episode["is_first"] = np.arange(STEPS) == 0
    return episode


def test_every_openvla_dataset_is_registered_and_has_a_feature_spec():
    assert len([n for n in RLDS_DATASETS if n != "vla_sim"]) == 70
    assert set(FEATURES) == set(RLDS_DATASETS)


@pytest.mark.parametrize("name", RLDS_DATASETS)
def test_transform_on_synthetic_episode(name):
    config: DatasetConfig = DATASET_CONFIGS[name]
    features = FEATURES[name]
    raw = synthetic_episode(name)
    shapes = {key: value[1] for key, value in features["observation"].items() if value[0] == "image"}
    episode = config.standardize(copy.deepcopy(raw), name, image_shapes=shapes)
    # Bridge drops its first (all-zero) step and relabels from the next state, losing the last one.
    expected_steps = STEPS - 2 if name.startswith("bridge") else STEPS
    assert episode.actions.shape == (expected_steps, config.action_dim)
    assert np.isfinite(episode.actions).all()
    assert episode.proprio.shape == (expected_steps, features["proprio"])
    assert len(episode.instructions) == expected_steps
    assert all(isinstance(text, str) and text for text in episode.instructions)
    assert tuple(episode.images) == config.image_views and config.image_views
    # Depth keys named by the config exist after the transform (the pipeline itself does not load them).
    obs = config.transform(copy.deepcopy(raw))["observation"]
    assert {key for key in config.depth_obs_keys.values() if key} <= set(obs)


# === Data utilities (NumPy versions of OpenVLA's tf / tensorflow_graphics helpers) ===


def test_euler_from_quaternion_matches_scipy_extrinsic_xyz():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    quats = rng.normal(size=(64, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    expected = Rotation.from_quat(quats).as_euler("xyz")  # scipy: (x, y, z, w), R = Rz Ry Rx
    np.testing.assert_allclose(T.euler_from_quaternion(quats), expected, atol=1e-5)
    np.testing.assert_allclose(T.euler_from_quaternion([0, 0, 0, 1]), [0, 0, 0], atol=1e-7)
    # Gimbal lock (pitch = +-90 deg): yaw is 0 and the rotation is preserved in roll.
    lock = Rotation.from_euler("xyz", [0.3, np.pi / 2, 0.0]).as_quat()
    roll, pitch, yaw = T.euler_from_quaternion(lock)
    assert yaw == 0 and pitch == pytest.approx(np.pi / 2, abs=1e-3)
    expected_matrix = Rotation.from_quat(lock).as_matrix()
    np.testing.assert_allclose(T.rotation_matrix_from_euler([roll, pitch, yaw]), expected_matrix, atol=1e-3)


def test_rotation_matrix_from_euler_and_r6():
    from scipy.spatial.transform import Rotation

    euler = np.random.default_rng(1).uniform(-np.pi, np.pi, (10, 3))
    matrices = T.rotation_matrix_from_euler(euler)
    np.testing.assert_allclose(matrices, Rotation.from_euler("xyz", euler).as_matrix(), atol=1e-9)
    r6 = T.rotation_matrix_to_r6(matrices)
    np.testing.assert_allclose(r6, np.concatenate([matrices[:, 0], matrices[:, 1]], axis=1))


def test_velocity_to_wrist_frame():
    velocity = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    yaw_90 = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, np.pi / 2]])
    out = T.velocity_to_wrist_frame(velocity, yaw_90)
    np.testing.assert_allclose(out[0, :3], [0.0, -1.0, 0.0], atol=1e-6)  # base +x is wrist -y
    np.testing.assert_allclose(out[0, 3:], [1, 0, 0, 0, 1, 0], atol=1e-6)  # no rotation -> identity R6


def test_gripper_utilities():
    np.testing.assert_array_equal(T.binarize_gripper_actions(np.array([1.0, 0.5, 0.0, 0.3, 1.0])), [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(np.array([0.0, 1.0, 0.0, -1.0, 0.0])), [1, 0, 0, 1, 1])
    np.testing.assert_array_equal(T.invert_gripper_actions(np.array([0.0, 1.0])), [1.0, 0.0])


def test_transform_semantics_spot_checks():
    # furniture_bench: quaternion rotation -> euler, gripper (-1 open .. 1 close) clipped and flipped.
    episode = synthetic_episode(ext("furniture_bench_dataset"))
    raw = copy.deepcopy(episode["action"])
    action = T.furniture_bench_transform(episode)["action"]
    np.testing.assert_allclose(action[:, 3:6], T.euler_from_quaternion(raw[:, 3:7]))
    np.testing.assert_allclose(action[:, 6], 1 - np.clip(raw[:, 7], 0, 1))
    # berkeley_fanuc: no stored gripper action, the inverted gripper state stands in.
    episode = synthetic_episode("berkeley_fanuc_manipulation")
    state = episode["observation"]["state"].copy()
    np.testing.assert_allclose(T.berkeley_fanuc_transform(episode)["action"][:, 6], 1 - state[:, 6])
    # gnm: 2-D actions padded; state = position + zeros + yaw.
    episode = T.gnm_transform(synthetic_episode("berkeley_gnm_recon"))
    assert episode["action"].shape == (STEPS, 7) and not episode["action"][:, 2:].any()
    assert not episode["observation"]["state"][:, 2:5].any()
    # berkeley_autolab_ur5: state = robot_state[6:14], depth renamed.
    episode = synthetic_episode("berkeley_autolab_ur5")
    robot_state = episode["observation"]["robot_state"].copy()
    obs = T.berkeley_autolab_ur5_transform(episode)["observation"]
    np.testing.assert_array_equal(obs["state"], robot_state[:, 6:14])
    assert "depth" in obs and "image_with_depth" not in obs


def test_joint_pos_datasets_are_registered_but_not_trainable():
    joint = {n for n, c in DATASET_CONFIGS.items() if c.action_encoding is ActionEncoding.JOINT_POS}
    assert joint == {ext("berkeley_mvp"), ext("berkeley_rpt"), "roboset"}
    assert not any(DATASET_CONFIGS[n].trainable for n in joint)
    with pytest.raises(ValueError, match="EEF_POS"):
        DATASET_CONFIGS["roboset"].action_normalization_mask


# === Mixtures ===


def test_all_openvla_mixtures_resolve_against_the_registry():
    assert len(OPENVLA_MIXTURES) == 18 and set(OPENVLA_MIXTURES) <= set(MIXTURES)
    for name in OPENVLA_MIXTURES:
        resolved = resolve_mixture(name)
        assert sum(w for _, w in resolved) == pytest.approx(1.0), name
        assert all(DATASET_CONFIGS[d].trainable for d, _ in resolved), name


def test_duplicate_datasets_are_dropped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vla.data.mixtures"):
        resolved = dict(resolve_mixture("rtx_franka"))
    for name in ("taco_play", "berkeley_cable_routing", "viola", "toto"):
        assert any("duplicate" in r.message and name in r.message for r in caplog.records), name
    # The first entry wins, as in OpenVLA's materialize.
    assert resolved["taco_play"] / resolved["bridge_orig"] == pytest.approx(2.0)
    assert resolved["berkeley_cable_routing"] / resolved["bridge_orig"] == pytest.approx(3.0)
    assert ext("berkeley_rpt") not in resolved  # JOINT_POS: skipped with a warning
    assert any("berkeley_rpt" in r.message and "JOINT_POS" in r.message for r in caplog.records)
    assert len(resolved) == 23


def test_single_dataset_name_is_a_one_dataset_mixture():
    assert resolve_mixture("bridge_dataset") == [("bridge_dataset", 1.0)]
    assert resolve_mixture(ext("stanford_hydra_dataset")) == [(ext("stanford_hydra_dataset"), 1.0)]
    with pytest.raises(ValueError, match="neither a named mixture"):
        resolve_mixture("no_such_dataset_or_mixture")


def test_magic_soup_plus_minus_resolves_all_its_datasets():
    resolved = dict(resolve_mixture("oxe_magic_soup_plus_minus"))
    assert set(resolved) == {name for name, _ in MIXTURES["oxe_magic_soup_plus_minus"]} and len(resolved) == 25


def test_magic_soup_plus_minus_composes_with_train_py():
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    result = subprocess.run(
        [sys.executable, "train.py", "model=dinosiglip", "data=oxe_magic_soup_plus_minus", "--cfg", "job"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mixture: oxe_magic_soup_plus_minus" in result.stdout
