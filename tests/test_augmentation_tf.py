"""Each op of OpenVLAAugmentation against tf.image (what OpenVLA's dlimp ``augment_image`` calls).

Random float32 images in [0, 1]; the bounds are the measured max |diff| with a small margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla.data.augmentation import (OpenVLAAugmentation, adjust_brightness, adjust_contrast, adjust_hue,
                                   adjust_saturation, crop_and_resize, pil_crop_and_resize, pil_crop_box)

tf = pytest.importorskip("tensorflow")

SHAPES = [(224, 224, 3), (37, 53, 3)]


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for shape in SHAPES]


def _max_diff(ours: np.ndarray, theirs) -> float:
    return float(np.abs(ours.astype(np.float64) - np.asarray(theirs, dtype=np.float64)).max())


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
            assert _max_diff(crop_and_resize(x, box), theirs) <= 1e-6
        # a box past the edge: TF fills 0 there, as ours
        box = (-0.1, 0.05, 0.8, 1.1)
        theirs = tf.image.crop_and_resize(x[None], [box], [0], (height, width))[0]
        assert _max_diff(crop_and_resize(x, box), theirs) <= 1e-6


def test_pipeline_crop_is_tf_bilinear_on_its_box():
    """The uint8 PIL crop __call__ uses == tf.image.crop_and_resize on pil_crop_box, up to uint8 rounding.

    PIL resamples uint8 in two separable passes (rows, then columns), each rounded to uint8: up to one
    level (1/255) apart from TF's float bilinear. Where the pixel-centre grid of a crop flush with an image edge reaches 0.03 px outside, PIL clamps to
    the edge pixel while TF fills 0: those rows / columns are compared with the clamped edge instead.
    """
    rng = np.random.default_rng(5)
    for shape in SHAPES:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        height, width = shape[:2]
        crop_h, crop_w = round(height * math.sqrt(0.9)), round(width * math.sqrt(0.9))
        for top, left in [(0, 0), (height - crop_h, width - crop_w), (1, 2), (height - crop_h - 1, 3)]:
            ours = pil_crop_and_resize(image, top, left, crop_h, crop_w).astype(np.float32) / 255
            box = pil_crop_box(top, left, crop_h, crop_w, height, width)
            padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float32) / 255
            # the same box on the edge-padded image (PIL's clamping), in its coordinates
            y1, x1, y2, x2 = box
            pbox = [(y1 * (height - 1) + 1) / (height + 1), (x1 * (width - 1) + 1) / (width + 1),
                    (y2 * (height - 1) + 1) / (height + 1), (x2 * (width - 1) + 1) / (width + 1)]
            theirs = tf.image.crop_and_resize(padded[None], [pbox], [0], (height, width))[0].numpy()
            assert _max_diff(ours, theirs) <= 1 / 255 + 1e-5
            if 0 < top < height - crop_h and 0 < left < width - crop_w:  # grid inside: the plain box, no padding
                plain = tf.image.crop_and_resize((image.astype(np.float32) / 255)[None], [box], [0], (height, width))[0]
                assert _max_diff(ours, plain) <= 1 / 255 + 1e-5
                assert _max_diff(ours, crop_and_resize(image.astype(np.float32) / 255, box)) <= 1 / 255 + 1e-5


def test_pipeline_equals_the_ops_chained_like_dlimp():
    """__call__ == crop, then brightness, contrast, saturation, hue with a clip after each (tf.image ops)."""
    aug = OpenVLAAugmentation()
    image = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rng = np.random.default_rng(7)
    p = aug.sample(64, 64, np.random.default_rng(7))
    ours = aug(image, rng)
    x = pil_crop_and_resize(image, p.top, p.left, p.crop_h, p.crop_w).astype(np.float32) / 255
    x = tf.clip_by_value(tf.image.adjust_brightness(x, p.brightness), 0, 1)
    x = tf.clip_by_value(tf.image.adjust_contrast(x, p.contrast), 0, 1)
    x = tf.clip_by_value(tf.image.adjust_saturation(x, p.saturation), 0, 1)
    x = tf.clip_by_value(tf.image.adjust_hue(x, p.hue), 0, 1)
    theirs = np.round(x.numpy() * 255).astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1  # float rounding at .5 only
    assert (ours != theirs).mean() < 1e-3
