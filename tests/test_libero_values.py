"""LIBERO eval preprocessing checked by value: the 180-degree flip, OpenVLA-OFT's 8-D state, the center crop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla.contract.images import center_crop
from vla.eval.envs.libero import libero_observation, quat2axisangle


def _raw(quat=(0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))) -> dict[str, np.ndarray]:
    agent = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)  # every pixel distinct: any wrong flip shows
    return {
        "agentview_image": agent,
        "robot0_eye_in_hand_image": agent + 100,
        "robot0_eef_pos": np.array([0.1, -0.2, 0.3]),
        "robot0_eef_quat": np.array(quat),
        "robot0_gripper_qpos": np.array([0.04, -0.039]),
    }


def test_both_cameras_are_rotated_180_degrees():
    raw = _raw()
    observation = libero_observation(raw)
    expected = np.array([[raw["agentview_image"][3 - r, 4 - c] for c in range(5)] for r in range(4)])
    np.testing.assert_array_equal(observation["image"], expected)
    np.testing.assert_array_equal(observation["image"], raw["agentview_image"][::-1, ::-1])
    np.testing.assert_array_equal(observation["wrist_image"], raw["robot0_eye_in_hand_image"][::-1, ::-1])
    assert observation["image"][0, 0].tolist() == [57, 58, 59]  # the last pixel of the raw frame comes first
    assert observation["image"].flags.c_contiguous


def test_state_is_eef_pos_axis_angle_and_finger_joints():
    # 90 degrees about z: axis-angle (0, 0, pi/2)
    state = libero_observation(_raw())["state"]
    assert state.dtype == np.float32 and state.shape == (8,)
    np.testing.assert_array_equal(state, np.array([0.1, -0.2, 0.3, 0.0, 0.0, math.pi / 2, 0.04, -0.039], np.float32))


@pytest.mark.parametrize(
    ("quat", "expected"),
    [
        ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),  # identity: sqrt(1 - w^2) == 0 -> zeros, not 0 / 0
        ((0.0, 0.0, 0.0, 1.0 + 1e-7), (0.0, 0.0, 0.0)),  # w past 1 (numerical drift) is clipped, not NaN
        ((0.0, 0.0, 0.0, -1.0), (0.0, 0.0, 0.0)),
        ((math.sin(5e-5), 0.0, 0.0, math.cos(5e-5)), (1e-4, 0.0, 0.0)),  # w = 1 - 1.25e-9: tiny angle, still computed
        ((0.0, math.sin(math.pi / 3), 0.0, math.cos(math.pi / 3)), (0.0, 2 * math.pi / 3, 0.0)),
        ((0.5, 0.5, 0.5, 0.5), (1.2091996, 1.2091996, 1.2091996)),  # 120 degrees about (1, 1, 1) / sqrt(3)
    ],
)
def test_quat2axisangle_hand_computed(quat, expected):
    quat = np.array(quat)
    before = quat.copy()
    np.testing.assert_allclose(quat2axisangle(quat), expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(quat, before)  # robosuite's version clips its argument in place; ours does not


def test_quat2axisangle_matches_robosuite():
    transform_utils = pytest.importorskip("robosuite.utils.transform_utils")
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for quat in rng.normal(size=(200, 4)).astype(dtype):
            quat /= np.linalg.norm(quat)
            ours, theirs = quat2axisangle(quat), transform_utils.quat2axisangle(quat.copy())
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)


def _ramp(size: int = 224) -> np.ndarray:
    """Each pixel's value is its column (0..223), the same in every row and channel."""
    return np.broadcast_to(np.arange(size, dtype=np.uint8)[None, :, None], (size, size, 3)).copy()


def test_center_crop_samples_the_central_sqrt_09_of_each_side():
    cropped = center_crop(_ramp())
    # output column j samples source column (1 - s) / 2 * 223 + j * s with s = sqrt(0.9): 5.72 ... 217.28
    side = math.sqrt(0.9)
    positions = (1 - side) / 2 * 223 + np.arange(224) * side
    expected = np.floor(positions / 255 * 255.5).astype(np.uint8)  # bilinear on a ramp is exact; TF truncates x * 255.5
    np.testing.assert_array_equal(cropped[0, :, 0], expected)  # the crop really zooms in
    assert cropped[0, 0, 0] == 5 and cropped[0, -1, 0] == 217
    assert (cropped == cropped[:1]).all()  # rows untouched by a horizontal ramp


def test_center_crop_equals_tensorflow():
    tf = pytest.importorskip("tensorflow")
    image = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    image[40:60, 100:180] = [250, 20, 20]
    # OpenVLA's get_vla_action(center_crop=True) with crop_scale 0.9 and batch size 1
    side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), (1,))
    offset = (1 - side) / 2
    boxes = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    floats = tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)
    crop = tf.image.crop_and_resize(floats[None], boxes, tf.range(1), (224, 224))[0]
    expected = tf.image.convert_image_dtype(tf.clip_by_value(crop, 0, 1), tf.uint8, saturate=True).numpy()
    np.testing.assert_array_equal(center_crop(image), expected)
    assert not np.array_equal(expected, image)  # a crop that did nothing could not pass
