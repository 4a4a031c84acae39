"""Standardization transforms and the dataset registry (NumPy only, no TensorFlow)."""

from __future__ import annotations

import io
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from vla.data import transforms as T
from vla.data.registry import DATASET_CONFIGS, EpisodeError, get_dataset_config

REQUIRED_DATASETS = [
    "bridge_orig",
    "bridge_dataset",
    "bridge_oxe",
    "libero_spatial_no_noops",
    "libero_object_no_noops",
    "libero_goal_no_noops",
    "libero_10_no_noops",
    "fractal20220817_data",
    "kuka",
    "taco_play",
    "jaco_play",
    "berkeley_cable_routing",
    "roboturk",
    "viola",
    "toto",
    "language_table",
    "droid",
    "vla_sim",
]


def _jpeg(shape=(8, 8, 3)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _images(n: int, shape=(8, 8, 3)) -> np.ndarray:
    array = np.empty(n, dtype=object)
    array[:] = [_jpeg(shape)] * n
    return array


def test_binarize_gripper_scans_backwards_and_keeps_raw_last_value():
    actions = np.array([1.0, 0.5, 0.02, 0.6, 1.0, 0.3], dtype=np.float32)
    # 0.5 -> next decided 0.02 (closed); 0.6 -> next decided 1.0; trailing 0.3 keeps its raw value
    np.testing.assert_array_equal(T.binarize_gripper_actions(actions), np.float32([1, 0, 0, 1, 1, 0.3]))


def test_rel2abs_gripper_starts_opposite_to_the_first_command():
    closing_first = np.array([0.0, 0.0, 1.0, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(closing_first), np.float32([1, 1, 0, 0, 1, 1]))
    opening_first = np.array([0.0, -1.0, 0.0])
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(opening_first), np.float32([0, 1, 1]))
    np.testing.assert_array_equal(T.rel2abs_gripper_actions(np.zeros(3)), np.float32([1, 1, 1]))


def _bridge_episode(length: int = 10) -> dict:
    rng = np.random.default_rng(0)
    state = rng.normal(size=(length, 7)).astype(np.float32)
    action = rng.normal(size=(length, 7)).astype(np.float32)
    action[:, -1] = [1, 1, 0.97, 0.5, 0.3, 0.02, 0.01, 0.6, 0.99, 1][:length]
    return {
        "observation": {"state": state, "image_0": _images(length), "image_1": _images(length)},
        "action": action,
        "language_instruction": np.array([b"put the cup in the sink"] * length, dtype=object),
    }


def test_bridge_orig_drops_first_and_last_step_and_relabels_from_states():
    episode = _bridge_episode(10)
    state = episode["observation"]["state"].copy()
    out = get_dataset_config("bridge_orig").standardize(episode, "bridge test episode")
    assert len(out) == 8
    np.testing.assert_allclose(out.actions[:, :6], state[2:, :6] - state[1:-1, :6])
    np.testing.assert_array_equal(out.actions[:, 6], np.float32([1, 1, 0, 0, 0, 0, 1, 1]))
    np.testing.assert_array_equal(
        out.proprio, np.concatenate([state[1:-1, :6], np.zeros((8, 1)), state[1:-1, 6:]], axis=1)
    )
    assert out.instructions[0] == "put the cup in the sink" and len(out.images["primary"]) == 8


def test_libero_flips_gripper_and_keeps_two_gripper_states():
    length = 4
    state = np.arange(length * 8, dtype=np.float32).reshape(length, 8)
    action = np.zeros((length, 7), dtype=np.float32)
    action[:, -1] = [-1, 1, 0.5, 2]
    episode = {
        "observation": {"state": state, "image": _images(length), "wrist_image": _images(length)},
        "action": action,
        "language_instruction": np.array([b"x"] * length, dtype=object),
    }
    out = get_dataset_config("libero_spatial_no_noops").standardize(episode, "libero test")
    np.testing.assert_array_equal(out.actions[:, -1], np.float32([1, 0, 0.5, 0]))
    assert out.proprio.shape == (length, 9)  # EEF(6) + pad + 2-D gripper state, as OpenVLA
    assert tuple(out.images) == ("primary", "wrist")


def test_kuka_decodes_zlib_state_and_language_table_decodes_codepoints():
    length = 2
    pose = np.arange(length * 7, dtype=np.float32).reshape(length, 7)
    episode = {
        "observation": {
            "image": _images(length),
            "clip_function_input/base_pose_tool_reached": np.array(
                [zlib.compress(p.tobytes()) for p in pose], dtype=object
            ),
            "gripper_closed": np.array([zlib.compress(np.float32([g]).tobytes()) for g in (0, 1)], dtype=object),
            "natural_language_instruction": np.array([b"pick"] * length, dtype=object),
        },
        "action": {
            "world_vector": np.ones((length, 3)),
            "rotation_delta": np.zeros((length, 3)),
            "gripper_closedness_action": np.array([[1.0], [0.0]]),
        },
    }
    out = get_dataset_config("kuka").standardize(episode, "kuka test")
    np.testing.assert_array_equal(out.proprio, np.concatenate([pose, [[0], [1]]], axis=1))
    np.testing.assert_array_equal(out.actions[:, -1], [0, 0])

    text = np.zeros((length, 8), dtype=np.int32)
    text[:, :4] = [ord(c) for c in "push"]
    table = {
        "observation": {"rgb": _images(length), "instruction": text, "effector_translation": np.ones((length, 2))},
        "action": np.full((length, 2), 0.5, dtype=np.float32),
    }
    out = get_dataset_config("language_table").standardize(table, "language_table test")
    assert out.instructions == ["push", "push"]
    np.testing.assert_array_equal(out.actions[0], np.float32([0.5, 0.5, 0, 0, 0, 0, 1]))
    assert out.proprio.shape == (length, 8)


def test_registry_covers_openvla_datasets_with_eef_pos_masks():
    assert set(REQUIRED_DATASETS) <= set(DATASET_CONFIGS)
    for name in REQUIRED_DATASETS:
        config = get_dataset_config(name)
        assert config.action_normalization_mask == [True] * 6 + [False]
        assert config.image_views[0] == "primary"
    assert get_dataset_config("vla_sim").image_obs_keys == {
        "primary": "image",
        "secondary": None,
        "wrist": "wrist_image",
    }
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        get_dataset_config("nope")


def _sim_episode(length: int = 3, **overrides) -> dict:
    rng = np.random.default_rng(1)
    episode = {
        "observation": {
            "image": _images(length),
            "wrist_image": _images(length),
            "state": rng.normal(size=(length, 7)).astype(np.float32),
        },
        "action": rng.normal(size=(length, 7)).astype(np.float32),
        "language_instruction": np.array([b"lift"] * length, dtype=object),
    }
    episode["observation"].update(overrides)
    return episode


def test_bad_episodes_raise_errors_naming_the_episode():
    config = get_dataset_config("vla_sim")
    nan = _sim_episode()
    nan["action"][2, 4] = np.inf
    with pytest.raises(EpisodeError, match=r"^ep 7: non-finite action inf at step 2, dim 4"):
        config.standardize(nan, "ep 7")
    missing = _sim_episode()
    del missing["observation"]["wrist_image"]
    with pytest.raises(EpisodeError, match=r"ep 7: missing image key 'wrist_image' for view 'wrist'"):
        config.standardize(missing, "ep 7")
    with pytest.raises(
        EpisodeError,
        match=r"ep 7 step 0 image 'image': image shape \(8, 8, 3\) does not match the expected \(16, 16, 3\)",
    ):
        config.standardize(_sim_episode(), "ep 7", {"image": (16, 16, 3)})
    broken = _sim_episode(image=np.array([b"not a jpeg"] * 3, dtype=object))
    with pytest.raises(EpisodeError, match="ep 7 step 0 image 'image': unreadable image"):
        config.standardize(broken, "ep 7")
    with pytest.raises(EpisodeError, match="ep 7: empty episode"):
        config.standardize(_sim_episode(length=0), "ep 7")
    bridge_too_short = _bridge_episode(length=2)
    with pytest.raises(EpisodeError, match="ep 7: empty episode"):
        get_dataset_config("bridge_orig").standardize(bridge_too_short, "ep 7")


def test_raw_uint8_images_are_accepted_and_validated():
    config = get_dataset_config("vla_sim")
    raw = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    out = config.standardize(_sim_episode(image=raw), "ep 0", {"image": (8, 8, 3)})
    assert out.images["primary"].shape == (3, 8, 8, 3)
    with pytest.raises(EpisodeError, match="raw image must be uint8"):
        config.standardize(_sim_episode(image=raw.astype(np.float32)), "ep 0")


def test_registry_and_transforms_do_not_import_tensorflow():
    import subprocess

    code = "import sys, vla.data.registry, vla.data.statistics, vla.data.shards; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
