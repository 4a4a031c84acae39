"""OpenVLAAugmentation against TensorFlow: each op, the conversions, the parameter draws and the whole of
dlimp's ``augment_image`` as OpenVLA runs it (written here from the tf.image ops it calls).

Random float32 images in [0, 1]; the bounds are the measured max |diff| with a small margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla.contract.images import crop_and_resize, to_float, to_uint8
from vla.data.augmentation import (AugmentationParams, OpenVLAAugmentation, adjust_brightness, adjust_contrast,
                                   adjust_hue, adjust_saturation)

tf = pytest.importorskip("tensorflow")

SHAPES = [(224, 224, 3), (37, 53, 3)]
# OpenVLA's image_augment_kwargs (prismatic/vla/datasets/datasets.py)
SCALE, RATIO, BRIGHTNESS, CONTRAST, SATURATION, HUE = (0.9, 0.9), (1.0, 1.0), 0.2, (0.8, 1.2), (0.8, 1.2), 0.05


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for shape in SHAPES]


def _uint8_images(seed: int):
    """Noise and smooth gradients (every hue sector, realistic saturation) at both shapes."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width, _ in SHAPES:
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1, 3) + np.linspace(0, 128, height)[:, None, None]
        images.append(np.clip(ramp + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8))
        images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return images


def _max_diff(ours: np.ndarray, theirs) -> float:
    return float(np.abs(ours.astype(np.float64) - np.asarray(theirs, dtype=np.float64)).max())


def _levels_apart(ours: np.ndarray, theirs: np.ndarray) -> tuple[int, float]:
    diff = np.abs(ours.astype(np.int16) - np.asarray(theirs).astype(np.int16))
    return int(diff.max()), float((diff > 0).mean())


@pytest.mark.parametrize("delta", [-0.2, -0.05, 0.13, 0.2])
def test_brightness_matches_tf(delta):
    for x in _images():
        assert _max_diff(adjust_brightness(x, delta), tf.image.adjust_brightness(x, delta)) <= 1e-7


@pytest.mark.parametrize("factor", [0.8, 0.93, 1.2])
def test_contrast_matches_tf(factor):
    for x in _images(1):
        assert _max_diff(adjust_contrast(x, factor), tf.image.adjust_contrast(x, factor)) <= 1e-6


@pytest.mark.parametrize("factor", [0.8, 1.07, 1.2])
def test_saturation_matches_tf(factor):
    for x in _images(2):
        assert _max_diff(adjust_saturation(x, factor), tf.image.adjust_saturation(x, factor)) <= 2e-6


@pytest.mark.parametrize("delta", [-0.05, -0.013, 0.031, 0.05])
def test_hue_matches_tf(delta):
    for x in _images(3):
        assert _max_diff(adjust_hue(x, delta), tf.image.adjust_hue(x, delta)) <= 2e-6


def test_crop_and_resize_matches_tf_on_dlimps_box():
    """dlimp's random_resized_crop box (scale 0.9, ratio 1: sqrt(0.9) per side, offsets in [0, 1 - sqrt(0.9)])."""
    side = math.sqrt(0.9)
    for x in _images(4):
        height, width = x.shape[:2]
        for off_y, off_x in [(0.0, 0.0), (1 - side, 1 - side), (0.013, 0.041), (0.5 * (1 - side), 0.0)]:
            box = (off_y, off_x, off_y + side, off_x + side)
            theirs = tf.image.crop_and_resize(x[None], [box], [0], (height, width))[0]
            assert _max_diff(crop_and_resize(x, box), theirs) == 0
        # a box past the edge: TF fills 0 there, as ours
        box = (-0.1, 0.05, 0.8, 1.1)
        theirs = tf.image.crop_and_resize(x[None], [box], [0], (height, width))[0]
        assert _max_diff(crop_and_resize(x, box), theirs) == 0


def test_dtype_conversions_are_tfs():
    """uint8 -> float32 and back (saturate=True: x * 255.5 clipped and truncated), on every level and around them."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    assert np.array_equal(to_float(levels), tf.image.convert_image_dtype(levels, tf.float32).numpy())
    floats = np.concatenate([np.linspace(-0.01, 1.01, 100_003, dtype=np.float32),
                             (np.arange(256, dtype=np.float32) + 0.5) / np.float32(255.5)])  # the truncation edges
    floats = np.concatenate([floats, np.nextafter(floats, np.float32(2)), np.nextafter(floats, np.float32(-1))])
    assert np.array_equal(to_uint8(floats), tf.image.convert_image_dtype(floats, tf.uint8, saturate=True).numpy())


def _dlimp_augment(image: np.ndarray, seed: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """dlimp's augment_image with OpenVLA's kwargs and one seed for every op (as OpenVLA's ``augment``): uint8
    and the crop box."""
    seed = tf.constant(seed, tf.int32)
    x = tf.image.convert_image_dtype(image, tf.float32)
    scale = tf.random.stateless_uniform((1,), seed, *SCALE)
    ratio = tf.exp(tf.random.stateless_uniform((1,), seed, math.log(RATIO[0]), math.log(RATIO[1])))
    height, width = tf.clip_by_value(tf.sqrt(scale / ratio), 0, 1), tf.clip_by_value(tf.sqrt(scale * ratio), 0, 1)
    top = tf.random.stateless_uniform((1,), seed, 0, 1 - height)
    left = tf.random.stateless_uniform((1,), seed, 0, 1 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    x = tf.clip_by_value(tf.image.crop_and_resize(x[None], boxes, tf.range(1), image.shape[:2])[0], 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_brightness(x, BRIGHTNESS, seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_contrast(x, *CONTRAST, seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_saturation(x, *SATURATION, seed), 0, 1)
    x = tf.clip_by_value(tf.image.stateless_random_hue(x, HUE, seed), 0, 1)
    return tf.image.convert_image_dtype(x, tf.uint8, saturate=True).numpy(), boxes.numpy()[0]


@pytest.mark.parametrize("seed", [(1, 0), (8, 1), (123, 456), (2**30, 7)])
def test_parameters_are_dlimps_draws_from_one_seed(seed):
    """Every op of an image shares OpenVLA's seed, so one unit draw gives all parameters: ours from that draw
    equal TF's exactly (the crop box and each colour factor)."""
    unit = tf.random.stateless_uniform((), tf.constant(seed, tf.int32), 0, 1).numpy()
    p = OpenVLAAugmentation().params(unit)
    zeros = tf.zeros((8, 8, 3))
    _, box = _dlimp_augment(np.zeros((8, 8, 3), np.uint8), seed)
    assert np.array_equal(np.asarray(p.box, np.float32), box)
    seed = tf.constant(seed, tf.int32)
    assert np.float32(p.brightness) == tf.image.stateless_random_brightness(zeros, BRIGHTNESS, seed).numpy()[0, 0, 0]
    assert np.float32(p.contrast) == tf.random.stateless_uniform((), seed, *CONTRAST).numpy()
    assert np.float32(p.saturation) == tf.random.stateless_uniform((), seed, *SATURATION).numpy()
    assert np.float32(p.hue) == tf.random.stateless_uniform((), seed, -HUE, HUE).numpy()


def test_augmentation_is_dlimps_augment_image():
    """The whole call on TF's own draws: uint8 equal but for a pixel in ~1e6, one level apart (the HSV ops' float32)."""
    augment = OpenVLAAugmentation()
    apart, total = 0.0, 0
    for i, image in enumerate(_uint8_images(6)):
        seed = (11 * i + 3, i)
        theirs, _ = _dlimp_augment(image, seed)
        ours = augment.apply(image, augment.params(tf.random.stateless_uniform((), tf.constant(seed, tf.int32), 0, 1).numpy()))
        levels, fraction = _levels_apart(ours, theirs)
        assert levels <= 1
        apart, total = apart + fraction * ours.size, total + ours.size
    assert apart / total <= 1e-4


def test_fixed_parameters_follow_dlimps_ops_in_float32():
    """Fixed parameters through our ops and through the tf.image ops, before the uint8 conversion: within the
    colour ops' float32 bounds; after it, at most one level on rare pixels."""
    side = float(np.sqrt(np.float32(0.9)))
    cases = [AugmentationParams(0.0, 0.0, side, side, -0.2, 0.8, 0.8, -0.05),
             AugmentationParams(0.02, 0.01, 0.02 + side, 0.01 + side, 0.07, 1.13, 1.2, 0.031),
             AugmentationParams(1 - side, 1 - side, 1.0, 1.0, 0.2, 1.2, 0.93, 0.05)]
    for image, p in zip(_uint8_images(7), cases):
        x = tf.image.convert_image_dtype(image, tf.float32)
        x = tf.clip_by_value(tf.image.crop_and_resize(x[None], [p.box], [0], image.shape[:2])[0], 0, 1)
        x = tf.clip_by_value(tf.image.adjust_brightness(x, p.brightness), 0, 1)
        x = tf.clip_by_value(tf.image.adjust_contrast(x, p.contrast), 0, 1)
        x = tf.clip_by_value(tf.image.adjust_saturation(x, p.saturation), 0, 1)
        x = tf.clip_by_value(tf.image.adjust_hue(x, p.hue), 0, 1)
        ours = np.clip(crop_and_resize(to_float(image), p.box), 0, 1)
        for op, value in [(adjust_brightness, p.brightness), (adjust_contrast, p.contrast),
                          (adjust_saturation, p.saturation), (adjust_hue, p.hue)]:
            ours = np.clip(op(ours, value), 0, 1)
        assert _max_diff(ours, x) <= 3e-6
        levels, fraction = _levels_apart(OpenVLAAugmentation.apply(image, p), tf.image.convert_image_dtype(x, tf.uint8, saturate=True))
        assert levels <= 1 and fraction <= 1e-4
